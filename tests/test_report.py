"""report.html in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium)."""

import csv
import datetime
import io
import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from audit.cli import main

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = '5_<img src=x onerror=alert(1)> & "q".wav'  # a name that is markup if not escaped


@pytest.fixture(scope="module")
def report_run(subset_dir, fsdd_dir, ecapa, cache_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("report-data")
    for f in subset_dir.glob("*.wav"):
        shutil.copy(f, data / f.name)
    shutil.copy(fsdd_dir / "1_theo_0.wav", data / "1_theo_0.wav")
    shutil.copy(fsdd_dir / "1_theo_0.wav", data / "1_copy_of_theo.wav")  # exact duplicate
    wav, rate = sf.read(fsdd_dir / "2_theo_3.wav")
    sf.write(data / "2_theo_3.wav", wav, rate)
    sf.write(data / "2_reencoded.wav", wav, rate, subtype="PCM_24")  # same audio, other bytes
    shutil.copy(fsdd_dir / "5_theo_1.wav", data / HOSTILE)
    shutil.copy(fsdd_dir / "5_theo_1.wav", data / "5_theo_1.wav")  # so the hostile name is listed as a duplicate
    out = tmp_path_factory.mktemp("report") / "out"
    assert main(["--data", str(data), "--encoder", ecapa, "--out", str(out), "--cache-dir", str(cache_dir),
                 "--no-progress", "--report-top", "8", "--relabel-out", str(out.parent / "fixed.csv")]) == 0
    return out


def test_planted_duplicates_are_found(report_run):
    dups = pd.read_csv(report_run / "duplicates.csv")
    groups = {frozenset(Path(p).name for p in g["path"]): g["kind"].iloc[0] for _, g in dups.groupby("group")}
    assert groups.get(frozenset({"1_theo_0.wav", "1_copy_of_theo.wav"})) == "exact"
    assert any({"2_theo_3.wav", "2_reencoded.wav"} <= names for names in groups), groups
    for name in ("outliers.csv", "class_imbalance.csv", "data_issues.csv", "report.html"):
        assert (report_run / name).exists()


def test_relabelled_manifest_applies_the_suggestions_and_keeps_the_original(report_run):
    fixed = pd.read_csv(report_run.parent / "fixed.csv", dtype=str, keep_default_na=False)
    issues = pd.read_csv(report_run / "issues.csv", dtype=str, keep_default_na=False)
    assert len(fixed) == len(pd.read_csv(report_run / "scores.csv"))
    changed = fixed[fixed["relabelled"] == "True"]
    assert len(changed) > 0 and (changed["label"] != changed["original_label"]).all()
    suggested = dict(zip(issues["path"].map(os.path.basename), issues["suggested_label"]))
    for row in changed.itertuples():
        assert row.label == suggested[os.path.basename(row.path)]
    assert (fixed.loc[fixed["relabelled"] == "False", "label"] == fixed.loc[fixed["relabelled"] == "False", "original_label"]).all()


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: apt-get install chromium chromium-driver")
        pytest.skip("chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1300,2400"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    yield driver
    driver.quit()


def test_report_opens_offline_with_players_matrix_and_map(report_run, browser):
    from selenium.webdriver.common.by import By

    html = (report_run / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # nothing to fetch: it opens offline
    browser.get((report_run / "report.html").as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    players = browser.find_elements(By.CSS_SELECTOR, "#issues > .issues audio")  # the flagged clips' cards
    n_issues = len(pd.read_csv(report_run / "issues.csv"))
    assert len(players) == min(8, n_issues) > 0
    # the review goes on past the cut: the next clips of the ranking, behind a closed <details>
    past = browser.find_elements(By.CSS_SELECTOR, "#past-cut .issue")
    scores = pd.read_csv(report_run / "scores.csv")
    assert [int(e.get_attribute("data-row")) for e in past] == \
        scores[~scores["is_label_issue"]]["row"].head(max(0, 8 - n_issues)).tolist()
    if past:
        assert not browser.find_element(By.ID, "past-cut").get_attribute("open") and not past[0].is_displayed()
        browser.find_element(By.CSS_SELECTOR, "#past-cut summary").click()
        assert past[0].is_displayed()
    assert all(p.get_attribute("src").startswith("data:audio/wav;base64,") for p in players)
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_script("document.querySelector('#issues audio').load()")  # metadata even with preload=none
    WebDriverWait(browser, 20).until(lambda b: b.execute_script(
        "const a = document.querySelector('#issues audio'); return a.readyState >= 1 && a.duration > 0.1"))
    specs = browser.find_elements(By.CSS_SELECTOR, "#issues > .issues img.spec")
    assert len(specs) == len(players)
    assert all(browser.execute_script("return arguments[0].naturalWidth", img) > 0 for img in specs)  # decoded
    cells = browser.find_elements(By.CSS_SELECTOR, "#noise-matrix td")
    assert len(cells) == 10 * 10
    assert len(browser.find_elements(By.CSS_SELECTOR, "#map circle")) == len(pd.read_csv(report_run / "scores.csv"))
    assert browser.find_elements(By.CSS_SELECTOR, "#map circle.flagged")
    artefacts = ROOT / "test-artifacts"
    artefacts.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(artefacts / "report.png"))


def test_names_with_markup_render_as_text(report_run, browser):
    from selenium.webdriver.common.by import By

    browser.get((report_run / "report.html").as_uri())
    assert browser.find_elements(By.CSS_SELECTOR, "img[src='x']") == []
    assert HOSTILE in browser.find_element(By.TAG_NAME, "body").text
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def _wait_for_download(folder: Path, pattern: str, timeout: float = 20) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [f for f in folder.glob(pattern) if not f.name.endswith(".crdownload")]
        if done:
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"no {pattern} in {folder} after {timeout} s: {sorted(f.name for f in folder.iterdir())}")


def test_review_decisions_persist_and_export_a_corrected_manifest(report_run, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.action_chains import ActionChains

    from audit.outputs import read_run

    run = read_run(report_run)
    files = run.clip_map.sort_values("row")["file"].tolist()  # (N,) absolute, row order
    given = dict(zip(run.scores["row"], run.scores["given_label"]))
    cards = run.scores[run.scores["is_label_issue"]].head(8)
    assert len(cards) >= 3, "the run must flag at least 3 clips to review"
    first, second, third = (cards.iloc[i] for i in range(3))
    ranked = [run.classes[k] for k in (-run.pred_probs[third.row]).argsort(kind="stable")]  # most probable first
    n = next(i for i, c in enumerate(ranked[:9], 1) if c not in (third.given_label, third.suggested_label))
    expected = {int(first.row): ("accept", first.suggested_label), int(second.row): ("keep", second.given_label),
                int(third.row): ("relabel", ranked[n - 1])}

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    browser.get((report_run / "report.html").as_uri())
    browser.execute_script("localStorage.clear()")  # file:// pages share one storage: start clean
    browser.refresh()
    card = [browser.find_element(By.ID, f"issue-{r}") for r in expected]
    assert "current" in card[0].get_attribute("class")
    keys = ActionChains(browser)
    keys.send_keys("j").perform()
    assert "current" in card[1].get_attribute("class") and "current" not in card[0].get_attribute("class")
    keys.send_keys("k").perform()
    keys.send_keys("a").perform()  # accept on the first card moves on to the second
    assert "current" in card[1].get_attribute("class")
    card[1].find_element(By.CSS_SELECTOR, "button.keep").click()
    keys.send_keys(str(n)).perform()  # the n-th most probable class on the third card
    for el, (decision, label) in zip(card, expected.values()):
        assert el.get_attribute("data-decision") == decision

    browser.refresh()  # decisions come back from localStorage
    card = [browser.find_element(By.ID, f"issue-{r}") for r in expected]
    for el, (decision, label) in zip(card, expected.values()):
        assert el.get_attribute("data-decision") == decision
        assert el.find_element(By.CSS_SELECTOR, ".status").text.endswith(f": {label}")
    assert card[0].find_element(By.CSS_SELECTOR, "button.accept").get_attribute("aria-pressed") == "true"
    assert card[2].find_element(By.CSS_SELECTOR, "select.pick").get_attribute("value") == expected[int(third.row)][1]
    on_page = len(browser.find_elements(By.CSS_SELECTOR, "#issues .issue"))  # the flagged cards and those past the cut
    assert on_page >= len(cards)
    assert browser.find_element(By.ID, "review-progress").text.startswith(f"3 of {on_page} cards reviewed")
    if len(cards) > 3:  # the first card without a decision is the current one
        assert "current" in browser.find_element(By.ID, f"issue-{cards.iloc[3].row}").get_attribute("class")

    browser.find_element(By.ID, "export-csv").click()
    browser.find_element(By.ID, "export-json").click()
    manifest = _wait_for_download(downloads, "*-corrected.csv")
    decisions = json.loads(_wait_for_download(downloads, "*-decisions.json").read_text(encoding="utf-8"))

    text = manifest.read_bytes().decode("utf-8")
    table = list(csv.reader(io.StringIO(text, newline="")))
    assert table[0] == ["path", "label", "original_label", "decision"]
    assert [r[0] for r in table[1:]] == files  # every clip, in row order, absolute path intact
    assert any(r[0].endswith(os.sep + HOSTILE) for r in table[1:])  # quotes, <, > and & survive the round trip
    for row, (path, label, original, decision) in enumerate(table[1:]):
        assert original == given[row]
        assert (decision, label) == expected.get(row, ("unreviewed", given[row]))
    written = io.StringIO()  # byte for byte what Python's csv module writes: csv.reader alone forgives a stray quote
    csv.writer(written, lineterminator="\n").writerows(table)
    assert text == written.getvalue()

    assert [d["row"] for d in decisions] == sorted(expected)
    for d in decisions:
        assert (d["decision"], d["label"]) == expected[d["row"]]
        assert d["path"] == files[d["row"]] and d["given"] == given[d["row"]]
        assert datetime.datetime.fromisoformat(d["at"].replace("Z", "+00:00")).tzinfo is not None

    hostile = [HOSTILE, "a,b", 'say "hi"', "line\nbreak", "cr\rlf\r\n", "</script><b>x</b>", "", " spaced "]
    line = browser.execute_script("return window.auditCsv.line(arguments[0])", hostile)
    assert list(csv.reader(io.StringIO(line, newline=""))) == [hostile]
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    artefacts = ROOT / "test-artifacts"
    artefacts.mkdir(exist_ok=True)
    browser.execute_script("document.getElementById('issues').scrollIntoView()")
    assert browser.save_screenshot(str(artefacts / "report-review.png"))


def _fresh_page(browser, page, tmp_path):
    """Opens `page` with no stored decisions and downloads allowed into a new folder, which it returns."""
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    browser.get(page.as_uri())
    browser.execute_script("localStorage.clear()")
    browser.refresh()
    return downloads


def _corrected_csv(downloads) -> list[list[str]]:
    text = _wait_for_download(downloads, "*-corrected.csv").read_text(encoding="utf-8")
    return list(csv.reader(io.StringIO(text, newline="")))


def test_a_run_too_large_for_the_page_exports_the_reviewed_cards_only(report_run, browser, tmp_path, monkeypatch):
    """Above REVIEW_ALL_ROWS_MAX clips the page carries only its cards' rows (1M paths were a 68 MB page)."""
    from selenium.webdriver.common.by import By

    from audit import report
    from audit.outputs import read_run

    monkeypatch.setattr(report, "REVIEW_ALL_ROWS_MAX", 10)
    run = read_run(report_run)
    page = report.render_report(run, tmp_path / "large.html", top=5)
    cards = run.scores[run.scores["is_label_issue"]].head(5)
    files = run.clip_map.set_index("row")["file"]
    assert "merge it into your manifest by path" in page.read_text()
    downloads = _fresh_page(browser, page, tmp_path)
    browser.find_element(By.ID, f"issue-{cards.iloc[0].row}").find_element(By.CSS_SELECTOR, "button.accept").click()
    browser.find_element(By.ID, "export-csv").click()
    table = _corrected_csv(downloads)
    assert [r[0] for r in table[1:]] == [files[r] for r in sorted(cards["row"])]  # the cards, in row order
    decided = {r[0]: (r[1], r[3]) for r in table[1:]}
    assert decided[files[cards.iloc[0].row]] == (cards.iloc[0].suggested_label, "accept")
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_a_manifest_of_segments_exports_each_clips_offset_and_duration(report_run, browser, tmp_path):
    """Two segments of one file are two clips: the corrected manifest must keep them apart."""
    from selenium.webdriver.common.by import By

    from audit import report
    from audit.outputs import read_run

    run = read_run(report_run)
    run.scores["offset"] = (run.scores["row"] * 0.5).astype(str)  # as a segmented run's extra columns come back
    run.scores["duration"] = "1.25"
    page = report.render_report(run, tmp_path / "segments.html", top=3)
    downloads = _fresh_page(browser, page, tmp_path)
    browser.find_element(By.ID, "export-csv").click()
    table = _corrected_csv(downloads)
    assert table[0] == ["path", "offset", "duration", "label", "original_label", "decision"]
    assert len(table) == len(run.clip_map) + 1
    assert [float(r[1]) for r in table[1:]] == [0.5 * i for i in range(len(run.clip_map))]
    assert {r[2] for r in table[1:]} == {"1.25"}
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_report_command_rebuilds_the_page(report_run, tmp_path):
    (report_run / "report.html").unlink()
    assert main(["report", str(report_run), "--top", "3"]) == 0
    html = (report_run / "report.html").read_text()
    cards = html.split('<section id="issues">')[1].split("</section>")[0]  # audio health has players too
    assert cards.count('<div class="issue" ') == cards.count("<audio") == 3
    assert main(["report", str(tmp_path)]) == 2


def test_a_health_row_whose_audio_is_gone_says_why_and_a_bug_is_not_swallowed(tmp_path, caplog, monkeypatch):
    import logging

    from audit import report

    table = pd.DataFrame({"path": ["gone.wav"], "type": ["clipped"], "value": [0.2], "threshold": [0.01], "row": [0]})
    with caplog.at_level(logging.WARNING, logger="audit.report"):
        rows = report._health(table, [str(tmp_path / "gone.wav")], [])["rows"]
    assert rows[0]["audio"] is None and "unreadable audio" in rows[0]["media_error"]
    assert "gone.wav" in caplog.text  # logged, not passed over
    monkeypatch.setattr(report, "_media", lambda file: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        report._health(table, [str(tmp_path / "gone.wav")], [])


def test_a_clean_set_flags_nothing_and_its_page_still_offers_the_ranking(browser, tmp_path):
    """Estimate 0 on well-separated classes: no flagged card, the clips past the cut still reviewable, no JS error."""
    import audit
    from selenium.webdriver.common.by import By
    from synthetic_set import clusters, write_set

    emb, labels = clusters([60, 60, 60], dim=8, spread=0.3)
    manifest, npy = write_set(tmp_path / "set", emb, labels)
    audit.run(manifest, embeddings=npy, devices=1, progress=False, out=str(tmp_path / "out"))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_label_issues"] == 0 and summary["label_issue_estimate"]["estimate"] < 0.5
    browser.get((tmp_path / "out" / "report.html").as_uri())
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    past = browser.find_elements(By.CSS_SELECTOR, "#past-cut .issue")
    assert len(past) == 10 and browser.find_element(By.ID, "review-progress").text.startswith("0 of 10")
    browser.find_element(By.TAG_NAME, "body").send_keys("j")  # the first card past the cut: its <details> opens
    assert browser.find_element(By.ID, "past-cut").get_attribute("open") is not None and past[0].is_displayed()


def test_a_tag_sets_page_offers_the_clips_past_the_cut_with_their_worst_tag_flipped(tmp_path, browser):
    """Tag sets: the clips past the cut carry no suggested change of their own; their cards offer the one
    tag that ranks them (label_issues.tag_margins) flipped, so the review can go on past the cut."""
    import re

    import numpy as np
    from selenium.webdriver.common.by import By

    import audit
    from synthetic_set import write_set

    rng = np.random.default_rng(0)
    tags = ["bark", "car", "rain", "speech"]
    truth = rng.random((240, 4)) < 0.35
    emb = 5.0 * truth + rng.normal(0, 0.7, (240, 4))  # one axis per tag
    emb = np.hstack([emb, rng.normal(0, 1, (240, 4))]).astype(np.float32)
    given = truth.copy()
    given[rng.choice(240, 12, replace=False), rng.integers(0, 4, 12)] ^= True  # 12 clips: one tag wrong
    cells = [";".join(t for t, on in zip(tags, row) if on) for row in given]
    manifest, npy = write_set(tmp_path / "set", emb, cells)
    audit.run(manifest, embeddings=npy, multi_label=True, devices=1, progress=False, out=str(tmp_path / "out"))
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="past-cut"' in html
    past = html.split('id="past-cut"', 1)[1]
    pairs = re.findall(r'class="given">([^<]*)</span> → suggested <span class="suggested">([^<]*)</span>', past)
    assert len(pairs) >= 10
    for was, now in pairs:  # exactly one tag differs
        assert len(set(filter(None, was.split(";"))) ^ set(filter(None, now.split(";")))) == 1, (was, now)
    from audit.label_issues import tag_margins  # ... and for the first card it is the tag that ranks the clip

    row = int(re.search(r'data-row="(\d+)"', past).group(1))
    worst = tag_margins(given.astype(np.int8), np.load(tmp_path / "out" / "pred_probs.npy"), "self_confidence")[row]
    assert set(filter(None, pairs[0][0].split(";"))) ^ set(filter(None, pairs[0][1].split(";"))) == \
        {tags[int(np.argmin(worst))]}
    browser.get((tmp_path / "out" / "report.html").as_uri())
    browser.execute_script("localStorage.clear()")
    browser.refresh()
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    browser.find_element(By.CSS_SELECTOR, "#past-cut summary").click()
    card = browser.find_elements(By.CSS_SELECTOR, "#past-cut .issue")[0]
    card.find_element(By.CSS_SELECTOR, "button.accept").click()
    assert card.get_attribute("data-decision") == "accept"
    assert card.find_element(By.CSS_SELECTOR, ".status").text.endswith(f": {pairs[0][1]}")
