// Clicking a flagged point on the embedding map plays that clip (when its audio is in the page)
// and scrolls to its card. No network, no libraries.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("#map circle[data-issue]").forEach(function (dot) {
    dot.addEventListener("click", function () {
      var card = document.getElementById("issue-" + dot.getAttribute("data-issue"));
      if (!card) { return; }
      card.scrollIntoView({ behavior: "smooth", block: "center" });
      var player = card.querySelector("audio");
      if (player) { player.play().catch(function () { /* autoplay blocked: the card is in view */ }); }
    });
  });
});
