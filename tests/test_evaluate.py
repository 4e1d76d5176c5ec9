import json

import numpy as np
import pytest

from audit import evaluate
from audit.cli import main
from audit.evaluate import flip_labels, score
from synthetic_set import clusters, write_set


def spy(monkeypatch, name: str, calls: list):
    """evaluate.<name> as before; each call's (positional arguments, result) appended to `calls`."""
    real = getattr(evaluate, name)

    def recorded(*args, **kwargs):
        calls.append((args, real(*args, **kwargs)))
        return calls[-1][1]

    monkeypatch.setattr(evaluate, name, recorded)


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
    assert perfect == pytest.approx({"precision": 1, "recall": 1, "f1": 1, "best_cut_f1": 1, "ap": 1, "auroc": 1,
                                     "precision_at_k": 1, "n_flagged": 2, "n_estimated": 2, "n_flips": 2})
    wrong = score(flipped, ~flipped, np.array([0.9, 0.95, 0.1, 0.2, 0.3]))
    assert wrong["precision"] == 0 and wrong["recall"] == 0 and wrong["f1"] == 0 and wrong["auroc"] == 0


def test_evaluate_command_reports_audit_next_to_the_reference(subset_dir, ecapa, cache_dir, tmp_path, capsys,
                                                              monkeypatch):
    audit_inputs, reference_inputs = [], []
    spy(monkeypatch, "audit_method", audit_inputs)
    spy(monkeypatch, "reference_method", reference_inputs)
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
    # audit on ECAPA's frame statistics; the reference, as published, on ECAPA's final (192-d) embedding
    assert {a[0].shape for a, _ in audit_inputs} == {(200, 6144)}
    assert {a[0].shape for a, _ in reference_inputs} == {(200, 192)} and report["reference_embedding_dim"] == 192


def test_confusable_noise_flips_toward_the_class_the_model_confuses(tmp_path, monkeypatch):
    """`--noise-kind confusable` end to end (from embeddings: no audio): classes 0 and 1 overlap, so their
    flips go to each other, where uniform noise would send 3 in 4 elsewhere."""
    emb, labels = clusters([40] * 5, dim=8)
    emb[labels == 1] -= 5.0 * (np.eye(8)[1] - np.eye(8)[0])  # class 1 moved next to class 0
    manifest, npy = write_set(tmp_path / "set", emb, labels)
    flips = []
    spy(monkeypatch, "flip_labels", flips)
    argv = ["evaluate", "--data", manifest, "--embeddings", npy, "--out", str(tmp_path / "eval"), "--noise", "0.3",
            "--repeats", "1", "--noise-kind", "confusable", "--devices", "1", "--no-progress"]
    assert main(argv) == 0
    assert len(flips) == 1  # one per repeat
    moved = to_partner = 0
    for (given, _, _, kind, _, confusion), (noisy, flipped) in flips:
        assert kind == "confusable" and confusion.shape == (5, 5)
        pair = flipped & (given <= 1)  # flipped clips of the two overlapping classes
        moved, to_partner = moved + pair.sum(), to_partner + (noisy[pair] == 1 - given[pair]).sum()
    assert moved >= 10 and to_partner / moved > 0.8, (to_partner, moved)
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["noise_kind"] == "confusable" and report["results"][0]["noise_kind"] == "confusable"


def test_score_gives_the_best_cut_of_the_ranking_beside_the_flagged_set():
    from audit.evaluate import score

    flipped = np.array([1, 1, 0, 0, 1, 0, 0, 0], bool)
    quality = np.array([0.1, 0.2, 0.3, 0.9, 0.25, 0.8, 0.7, 0.6])  # the three flips rank first
    flagged = np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)  # too many: 5 flagged for 3 flips
    s = score(flipped, flagged, quality)
    assert s["best_cut_f1"] == 1.0 and s["f1"] == pytest.approx(0.75) and (s["n_flagged"], s["n_flips"]) == (5, 3)
    worse = score(flipped, flagged, -quality)  # flips last: the best cut is all clips
    assert worse["best_cut_f1"] == pytest.approx(2 * 3 / (8 + 3))


def test_confusable_tag_noise_drops_the_tags_the_heads_doubt_and_adds_those_they_half_hear(tmp_path, monkeypatch):
    """`audit evaluate --multi-label --noise-kind confusable` end to end (from embeddings): tag 'b' is barely
    told apart from its absence, so far more corrupted clips lose or gain 'b' than under uniform tag noise."""
    rng = np.random.default_rng(0)
    truth = rng.random((300, 4)) < 0.4
    truth[~truth.any(1), 0] = True
    emb = np.where(truth, 4.0, 0.0) + rng.normal(0, 0.6, (300, 4))
    emb[:, 1] = 0.5 * truth[:, 1] + rng.normal(0, 1.0, 300)  # tag b: a weak signal
    emb = np.hstack([emb, rng.normal(0, 1, (300, 4))]).astype(np.float32)
    cells = [";".join(t for t, on in zip("abcd", row) if on) for row in truth]
    manifest, npy = write_set(tmp_path / "set", emb, cells)
    corrupted, real = [], evaluate.corrupt_tags
    spy(monkeypatch, "corrupt_tags", corrupted)
    argv = ["evaluate", "--data", manifest, "--embeddings", npy, "--multi-label", "--out", str(tmp_path / "eval"),
            "--noise", "0.2", "--repeats", "1", "--noise-kind", "confusable", "--devices", "1", "--no-progress"]
    assert main(argv) == 0
    (given, *_, clean), (noisy, hit) = corrupted[0]
    assert clean.shape == (300, 4) and hit.sum() == 60
    changed = given != noisy  # (N, K)
    uniform = np.mean([(real(given, 0.2, np.random.default_rng(s))[0] != given)[:, 1].sum()
                       for s in range(5)])  # clips whose b changed under uniform tag noise
    assert changed[:, 1].sum() > 1.3 * uniform, (changed[:, 1].sum(), uniform)  # 30 vs 18.6 when written
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["noise_kind"] == "confusable" and report["options"]["multi_label"]
