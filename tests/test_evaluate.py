import json

import numpy as np
import pytest

from audit.cli import main
from audit.evaluate import flip_labels, score


def test_flips_hit_the_requested_fraction_and_never_keep_the_label():
    labels = np.repeat(np.arange(5), 40)
    rng = np.random.default_rng(0)
    noisy, flipped = flip_labels(labels, 5, 0.1, "uniform", rng)
    assert flipped.sum() == 20 and (noisy[flipped] != labels[flipped]).all()
    assert (noisy[~flipped] == labels[~flipped]).all()
    confusion = np.eye(5) * 0.9
    confusion[0, 3] = confusion[1, 3] = confusion[2, 3] = confusion[4, 3] = 0.1
    confusion[3, 0] = 0.1
    noisy, flipped = flip_labels(labels, 5, 0.2, "confusable", np.random.default_rng(1), confusion)
    assert all(noisy[i] == (0 if labels[i] == 3 else 3) for i in np.flatnonzero(flipped))


def test_score_on_a_perfect_and_a_useless_ranking():
    flipped = np.array([True, True, False, False, False])
    perfect = score(flipped, flipped, np.array([0.1, 0.2, 0.8, 0.9, 0.95]))
    assert perfect == pytest.approx({"precision": 1, "recall": 1, "f1": 1, "ap": 1, "auroc": 1, "precision_at_k": 1})
    wrong = score(flipped, ~flipped, np.array([0.9, 0.95, 0.1, 0.2, 0.3]))
    assert wrong["precision"] == 0 and wrong["recall"] == 0 and wrong["f1"] == 0 and wrong["auroc"] == 0


def test_evaluate_command_reports_audit_next_to_the_reference(subset_dir, ecapa, cache_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--data", str(subset_dir), "--encoder", ecapa, "--cache-dir", str(cache_dir),
            "--out", str(out), "--noise", "0.1", "--repeats", "2", "--baseline", "reference", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "reference" in printed and "audit" in printed and "auroc" in printed
    report = json.loads((out / "eval.json").read_text())
    methods = {r["method"]: r for r in report["results"]}
    assert set(methods) == {"audit", "reference"}
    for rec in methods.values():
        for metric in ("precision", "recall", "f1", "ap", "auroc"):
            assert 0 <= rec[metric]["mean"] <= 1 and len(rec[metric]["runs"]) == 2
    # the subset already holds 6 wrong labels that count as "clean" here, so the bar is modest
    assert methods["audit"]["auroc"]["mean"] > 0.8
