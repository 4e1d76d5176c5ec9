"""The whole FSDD v1.0.9 release (2,500 clips) with the real ECAPA weights: minutes, so `-m slow`."""

import json
import os

import pandas as pd
import pytest

from audit.cli import main
from conftest import fsdd_recordings


@pytest.mark.slow
def test_fsdd_release_matches_the_reference_accuracy_and_finds_the_known_error(tmp_path, ecapa, monkeypatch):
    monkeypatch.setenv("AUDIT_FSDD_DIR", str(fsdd_recordings()))
    out = tmp_path / "fsdd"
    assert main(["--data", "fsdd", "--encoder", ecapa, "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_clips"] == 2500 and summary["n_skipped"] == 0
    # The reference workflow (LogisticRegression(C=0.01), 5-fold, same encoder, resampled) reaches 0.944.
    assert summary["cv_accuracy"] >= 0.944
    top5 = pd.read_csv(out / "issues.csv")["path"].head(5).map(os.path.basename).tolist()
    assert "6_yweweler_14.wav" in top5  # a "6" that sounds like "8"
