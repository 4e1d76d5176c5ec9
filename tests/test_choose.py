"""`--encoder auto` (choose.py): the encoder chosen on a sample of the user's data, by out-of-fold log-loss."""

import json
import os

import numpy as np
import pytest

from audit import choose
from audit.errors import UserError
from audit.options import AUTO_CANDIDATES, RunOptions
from conftest import SHARED


def test_the_sample_keeps_every_class_and_its_share():
    labels = np.repeat(np.arange(4), [900, 300, 30, 3])  # (1233,) imbalanced
    rows = choose.sample_rows(labels, 400, n_folds=5, seed=0)
    counts = np.bincount(labels[rows], minlength=4)
    assert counts[3] == 3 and counts[2] >= 5  # a rare class keeps what it has, at least n_folds
    assert abs(counts[0] / counts[1] - 3) < 0.2 and 380 <= len(rows) <= 420
    assert np.array_equal(rows, choose.sample_rows(labels, 400, n_folds=5, seed=0))  # seeded
    assert not np.array_equal(rows, choose.sample_rows(labels, 400, n_folds=5, seed=1))
    assert np.array_equal(choose.sample_rows(labels[:50], 400, 5, 0), np.arange(50))  # small sets: all of it


def test_log_loss_is_the_mean_negative_log_likelihood():
    probs = np.array([[0.5, 0.5], [0.9, 0.1]])
    assert choose.log_loss(probs, np.array([0, 1])) == pytest.approx(-(np.log(0.5) + np.log(0.1)) / 2)
    tags = np.array([[1, 0], [0, 1]])
    assert choose.log_loss(np.array([[0.8, 0.2], [0.2, 0.8]]), tags) == pytest.approx(-np.log(0.8))


@pytest.mark.parametrize("kw, message", [
    (dict(candidates=["a", "b"]), "add --encoder auto"),
    (dict(encoder="auto", candidates=["a", "a"]), "given twice"),
    (dict(encoder="auto", candidates=["auto"]), "not auto"),
    (dict(encoder=["auto", "b"]), "auto chooses one encoder"),
    (dict(encoder="auto", features="frames"), "--features: with --encoder auto"),
    (dict(encoder="auto", layer="6", frames_dim=1024), "--frames-dim, --layer: with --encoder auto"),
])
def test_auto_options_are_checked_in_one_line(kw, message):
    with pytest.raises(UserError, match=message):
        RunOptions(**kw)


def test_auto_compares_the_speech_default_and_a_sound_event_model():
    assert RunOptions(encoder="auto").encoder == "auto" and len(AUTO_CANDIDATES) == 2
    assert choose.candidates(RunOptions(encoder="auto", candidates=["x", "y", "z"])) == ("x", "y", "z")
    assert choose.candidates(RunOptions(encoder="auto", candidates="efficientat:mn10_as")) == ("efficientat:mn10_as",)


@pytest.mark.skipif(not (SHARED / "models" / "efficientat-mn04" / "mn04_as_mAP_432.pt").is_file(),
                    reason="no offline EfficientAT weights in ../shared")
def test_auto_picks_the_speech_encoder_on_spoken_digits(subset_dir, ecapa, tmp_path, monkeypatch):
    """200 real FSDD clips: ECAPA's frames understand digits (CV accuracy ~0.95), an AudioSet CNN's do not."""
    from audit.cli import main

    monkeypatch.setenv("AUDIT_EFFICIENTAT_DIR", str(SHARED / "models" / "efficientat-mn04"))
    out = tmp_path / "out"
    assert main(["--data", str(subset_dir), "--encoder", "auto", "--candidates", "efficientat:mn04_as", ecapa,
                 "--out", str(out), "--no-progress", "--devices", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    table = {row["encoder"]: row for row in summary["encoder_choice"]}
    assert summary["encoder"] == ecapa and table[ecapa]["chosen"] and not table["efficientat:mn04_as"]["chosen"]
    assert table[ecapa]["log_loss"] < table["efficientat:mn04_as"]["log_loss"]
    assert table[ecapa]["cv_accuracy"] > 0.85 and table[ecapa]["n_clips"] == 200
    assert summary["seconds"]["choose_encoder"] > 0
    # the winner's sample embeddings were cached: the run embedded nothing twice
    assert summary["n_embedded_now"] == 0 and os.path.isdir(out / "cache")
    assert "Encoder chosen on your data" in (out / "report.html").read_text()


def test_ties_go_to_the_candidate_listed_first(monkeypatch):
    """Within TIE_RELATIVE of the best log-loss the first listed wins: the same on every rank and every rerun."""
    from types import SimpleNamespace

    losses = {"cheap": 0.500, "dear": 0.495, "bad": 0.9}  # cheap and dear tie (1% apart)
    current = {}

    def fake_embed(files, trial, encoder, every_rank, **segments):
        current["spec"] = trial.encoder
        return SimpleNamespace(failed={}, emb=np.zeros((len(files), 2)), seconds=1.0, load_seconds=0.0,
                               n_computed=len(files))

    monkeypatch.setattr("audit.encoders.resolve", lambda spec: spec)
    monkeypatch.setattr("audit.embed.embed", fake_embed)
    monkeypatch.setattr("audit.heads.out_of_fold_probs", lambda *a, **k: np.full((20, 2), 0.5))
    monkeypatch.setattr(choose, "log_loss", lambda probs, y: losses[current["spec"]])
    manifest = SimpleNamespace(files=[f"{i}.wav" for i in range(20)], offsets=None, durations=None)
    labels = np.repeat(np.arange(2), 10)
    winner, table = choose.choose(manifest, labels, RunOptions(encoder="auto", candidates=["bad", "cheap", "dear"],
                                                               folds=2))
    assert winner == "cheap" and table["chosen"].tolist() == [False, True, False]
    assert choose.choose(manifest, labels, RunOptions(encoder="auto", candidates=["dear", "cheap", "bad"],
                                                      folds=2))[0] == "dear"
    losses["dear"] = 0.40  # no longer a tie: the better one wins wherever it is listed
    assert choose.choose(manifest, labels, RunOptions(encoder="auto", candidates=["cheap", "dear"], folds=2))[0] == "dear"
