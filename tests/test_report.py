"""report.html in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium)."""

import os
import shutil
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
    players = browser.find_elements(By.CSS_SELECTOR, "#issues audio")
    n_issues = len(pd.read_csv(report_run / "issues.csv"))
    assert len(players) == min(8, n_issues) > 0
    assert all(p.get_attribute("src").startswith("data:audio/wav;base64,") for p in players)
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_script("document.querySelector('#issues audio').load()")  # metadata even with preload=none
    WebDriverWait(browser, 20).until(lambda b: b.execute_script(
        "const a = document.querySelector('#issues audio'); return a.readyState >= 1 && a.duration > 0.1"))
    specs = browser.find_elements(By.CSS_SELECTOR, "#issues img.spec")
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


def test_report_command_rebuilds_the_page(report_run, tmp_path):
    (report_run / "report.html").unlink()
    assert main(["report", str(report_run), "--top", "3"]) == 0
    assert (report_run / "report.html").read_text().count("<audio") == 3
    assert main(["report", str(tmp_path)]) == 2
