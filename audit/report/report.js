// The page's behaviour, with no network and no libraries:
// - clicking a flagged point on the embedding map plays that clip and makes its card the current one;
// - each issue card takes a decision (accept the suggested label, keep the given one, or pick another
//   class), kept in localStorage under a key unique to the run (output folder + finished_at);
// - the review bar exports a corrected manifest of every clip (CSV) and the decisions (JSON) as Blob
//   downloads. A decision's label is a string, whatever the task.
(function () {
  "use strict";

  // RFC 4180: a field holding a quote, a comma or a line break is quoted, its quotes doubled.
  function csvField(value) {
    var s = String(value);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function csvLine(fields) { return fields.map(csvField).join(",") + "\n"; }
  window.auditCsv = { field: csvField, line: csvLine };  // the browser test checks the escaper directly

  var DECISIONS = { accept: "accepted", keep: "kept", relabel: "relabelled" };
  var data, cards = [], current = -1, decisions = {}, storage = null;

  function label(id) { return String(data.classes[id]); }

  function loadDecisions() {
    try {
      storage = window.localStorage;
      var saved = JSON.parse(storage.getItem(data.key) || "{}");
      Object.keys(saved).forEach(function (row) {
        var d = saved[row], r = Number(row);
        // what another version of the page stored, or a hand edit, is dropped rather than exported
        if (Number.isInteger(r) && r >= 0 && data.path[r] !== undefined && d && DECISIONS[d.decision] &&
            typeof d.label === "string" && typeof d.at === "string") {
          decisions[r] = { decision: d.decision, label: d.label, at: d.at };
        }
      });
    } catch (e) {  // storage blocked (privacy settings) or unreadable: decisions live in memory only
      storage = null;
      document.getElementById("review-storage").hidden = false;
    }
  }

  function saveDecisions() {
    if (!storage) { return; }
    try {
      storage.setItem(data.key, JSON.stringify(decisions));
    } catch (e) {  // quota or blocked: keep going in memory, and say so
      storage = null;
      document.getElementById("review-storage").hidden = false;
    }
  }

  function render(card) {
    var d = decisions[card.row];
    card.el.setAttribute("data-decision", d ? d.decision : "");
    card.el.querySelector("button.accept").setAttribute("aria-pressed", String(!!d && d.decision === "accept"));
    card.el.querySelector("button.keep").setAttribute("aria-pressed", String(!!d && d.decision === "keep"));
    card.select.value = d && d.decision === "relabel" ? d.label : "";
    card.el.querySelector(".status").textContent = d ? DECISIONS[d.decision] + ": " + d.label : "not reviewed";
  }

  function renderProgress() {
    var onCards = cards.filter(function (c) { return decisions[c.row]; }).length;
    var all = Object.keys(decisions).length;
    document.getElementById("review-progress").textContent = onCards + " of " + cards.length + " cards reviewed" +
      (all > onCards ? " (" + all + " decisions in all, some on cards not shown)" : "");
  }

  function setCurrent(i, focus) {
    if (i < 0 || i >= cards.length) { return; }
    if (current >= 0) {
      cards[current].el.classList.remove("current");
      cards[current].el.removeAttribute("aria-current");
    }
    current = i;
    var el = cards[i].el;
    var fold = el.closest("details");  // a card past the cut: shown before it can be decided on
    if (fold && !fold.open) { fold.open = true; }
    el.classList.add("current");
    el.setAttribute("aria-current", "true");
    if (focus) {
      el.focus({ preventScroll: true });
      el.scrollIntoView({ block: "nearest" });
    }
  }

  function decide(card, decision, value) {
    if (decision === "relabel") {  // a pick that equals the given or the suggested label is that decision
      decision = value === card.given ? "keep" : value === card.suggested ? "accept" : "relabel";
    }
    decisions[card.row] = { decision: decision, label: value, at: new Date().toISOString() };
    saveDecisions();
    render(card);
    renderProgress();
    setCurrent(Math.min(cards.indexOf(card) + 1, cards.length - 1), true);  // on to the next card
  }

  function undo(card) {
    delete decisions[card.row];
    saveDecisions();
    render(card);
    renderProgress();
  }

  function download(text, type, name) {
    var url = URL.createObjectURL(new Blob([text], { type: type + ";charset=utf-8" }));
    var a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 60000);
  }

  function fileStem() { return data.name.replace(/[^A-Za-z0-9._-]+/g, "_"); }

  // offset/duration of a manifest of segments: one file's segments are different clips
  function segmentColumns() {  // in the manifest's order, whatever order the page's JSON keeps
    return ["offset", "duration"].filter(function (c) { return data.segment && c in data.segment; });
  }

  function exportCsv() {
    var seg = segmentColumns();
    var lines = [csvLine(["path"].concat(seg, ["label", "original_label", "decision"]))];
    data.rows.forEach(function (r) {  // every clip, or only the cards' where the run is too large (data.partial)
      var given = label(data.given[r]), d = decisions[r];
      var where = seg.map(function (c) { return data.segment[c][r]; });
      lines.push(csvLine([data.path[r]].concat(where, [d ? d.label : given, given, d ? d.decision : "unreviewed"])));
    });
    download(lines.join(""), "text/csv", fileStem() + "-corrected.csv");
  }

  function exportJson() {
    var rows = Object.keys(decisions).map(Number).sort(function (a, b) { return a - b; });
    var list = rows.map(function (r) {
      var d = decisions[r];
      var item = { row: r, path: data.path[r], given: label(data.given[r]), decision: d.decision, label: d.label, at: d.at };
      segmentColumns().forEach(function (c) { item[c] = data.segment[c][r]; });
      return item;
    });
    download(JSON.stringify(list, null, 1) + "\n", "application/json", fileStem() + "-decisions.json");
  }

  function buildPick(card) {
    var ranked = (data.ranked[String(card.row)] || []).map(label);
    var top = document.createElement("optgroup");
    top.label = "most probable (keys 1–9)";
    ranked.forEach(function (name, i) {
      var o = new Option((i + 1) + " · " + name, name);  // text, never markup: names may hold anything
      top.appendChild(o);
    });
    var all = document.createElement("optgroup");
    all.label = "every class";
    data.classes.map(String).forEach(function (name) { all.appendChild(new Option(name, name)); });
    card.select.appendChild(top);
    card.select.appendChild(all);
    card.ranked = ranked;
  }

  function isTyping(el) {
    return el && (el.isContentEditable || /^(INPUT|SELECT|TEXTAREA|AUDIO|VIDEO)$/.test(el.tagName));
  }

  function onKey(e) {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || isTyping(e.target) || current < 0) { return; }
    var card = cards[current], key = e.key;
    var inCards = document.getElementById("issues").contains(document.activeElement);
    if (key === "j" || (inCards && (key === "ArrowDown" || key === "ArrowRight"))) {
      setCurrent(current + 1, true);
    } else if (key === "k" || (inCards && (key === "ArrowUp" || key === "ArrowLeft"))) {
      setCurrent(current - 1, true);
    } else if (key === "a") {
      decide(card, "accept", card.suggested);
    } else if (key === "g") {
      decide(card, "keep", card.given);
    } else if (/^[1-9]$/.test(key) && card.ranked[Number(key) - 1] !== undefined) {
      decide(card, "relabel", card.ranked[Number(key) - 1]);
    } else if (key === "u") {
      undo(card);
    } else if (key === "p") {
      var player = card.el.querySelector("audio");
      if (player) { if (player.paused) { player.play().catch(function () {}); } else { player.pause(); } }
    } else {
      return;
    }
    e.preventDefault();
  }

  function setUpReview() {
    var block = document.getElementById("review-data");
    if (!block) { return; }
    data = JSON.parse(block.textContent);
    document.querySelectorAll("#issues .issue[data-row]").forEach(function (el) {
      var row = Number(el.getAttribute("data-row"));
      cards.push({ el: el, row: row, given: label(data.given[row]), suggested: label(data.suggested[row]),
                   select: el.querySelector("select.pick"), ranked: [] });
    });
    if (!cards.length) { return; }
    loadDecisions();
    cards.forEach(function (card, i) {
      buildPick(card);
      render(card);
      // a click anywhere in a card focuses it (tabindex -1) or one of its controls
      card.el.addEventListener("focusin", function () { setCurrent(i, false); });
      card.el.querySelector("button.accept").addEventListener("click", function () { decide(card, "accept", card.suggested); });
      card.el.querySelector("button.keep").addEventListener("click", function () { decide(card, "keep", card.given); });
      card.select.addEventListener("change", function () {
        if (card.select.value) { decide(card, "relabel", card.select.value); }
      });
    });
    renderProgress();
    var firstOpen = cards.findIndex(function (c) { return !decisions[c.row]; });
    setCurrent(firstOpen < 0 ? 0 : firstOpen, false);
    document.addEventListener("keydown", onKey);
    document.getElementById("export-csv").addEventListener("click", exportCsv);
    document.getElementById("export-json").addEventListener("click", exportJson);
    document.getElementById("review-clear").addEventListener("click", function () {
      if (!window.confirm("Clear every decision for this run?")) { return; }
      decisions = {};
      saveDecisions();
      cards.forEach(render);
      renderProgress();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpReview();
    document.querySelectorAll("#map circle[data-issue]").forEach(function (dot) {
      dot.addEventListener("click", function () {
        var card = document.getElementById("issue-" + dot.getAttribute("data-issue"));
        if (!card) { return; }
        var i = cards.findIndex(function (c) { return c.el === card; });
        if (i >= 0) { setCurrent(i, false); }
        card.scrollIntoView({ behavior: "smooth", block: "center" });
        var player = card.querySelector("audio");
        if (player) { player.play().catch(function () { /* autoplay blocked: the card is in view */ }); }
      });
    });
  });
})();
