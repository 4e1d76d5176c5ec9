"""Calibration of the out-of-fold probabilities (calibration.py): fitted per fold on held-out rows that never
saw that fold, and what it changes."""

import numpy as np
import pytest

from audit import calibration
from audit.folds import stratified_folds
from audit.heads import out_of_fold_probs
from test_heads import blobs


def softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_undoes_a_known_over_or_under_confidence(temperature):
    """Labels drawn from softmax(z); the model reports softmax(z / T): the fitted scale on log p is T back."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (4000, 5))
    labels = np.array([rng.choice(5, p=row) for row in softmax(z)])
    reported = softmax(z / temperature)
    scale, bias = calibration.fit(reported, labels, "temperature")
    assert scale == pytest.approx(np.full(5, temperature), rel=0.1) and not bias.any()
    fixed = calibration.apply(reported, scale, bias, multi_label=False)
    nll = lambda p: -np.log(p[np.arange(len(labels)), labels]).mean()  # noqa: E731
    assert nll(fixed) < nll(reported) - 0.01
    assert np.allclose(fixed.sum(1), 1)
    assert (fixed.argmax(1) == reported.argmax(1)).all()  # a temperature never changes the arg-max


def test_tags_get_one_scale_each():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, (3000, 3))
    truth = (rng.random((3000, 3)) < 1 / (1 + np.exp(-z))).astype(np.int64)
    reported = 1 / (1 + np.exp(-z * np.array([0.5, 1.0, 3.0])))  # under-, well and over-confident tags
    scale, _ = calibration.fit(reported, truth, "temperature")
    assert scale == pytest.approx([2.0, 1.0, 1 / 3], rel=0.15)


def test_held_out_rows_of_a_fold_never_include_its_own_clips_and_calibrate_them():
    x, labels = blobs(n_per_class=50, seed=4)
    folds = stratified_folds(labels, 5, seed=0)
    p, held = out_of_fold_probs(x, labels, folds, 4, held_out=True)
    assert len(held) == 5
    for f, (rows, q) in enumerate(held):
        assert len(rows) and not (folds[rows] == f).any()  # fitted on fold f's training rows only
        assert q.shape == (len(rows), 4) and np.allclose(q.sum(1), 1)
    out = calibration.calibrate(p, labels, folds, held, "temperature")
    assert out.shape == p.shape and np.allclose(out.sum(1), 1) and not np.allclose(out, p)
    # fold f's rows moved by fold f's own map: recomputing one fold's map from its held-out rows gives them
    scale, bias = calibration.fit(held[2][1], labels[held[2][0]], "temperature")
    np.testing.assert_allclose(out[folds == 2], calibration.apply(p[folds == 2], scale, bias, multi_label=False))
    assert calibration.calibrate(p, labels, folds, held, "none") is p


def test_a_run_records_its_calibration_and_a_bad_one_is_one_line(tmp_path, capsys):
    import audit
    from audit.cli import main
    from synthetic_set import clusters, write_set

    emb, labels = clusters([40, 40, 40], dim=8, spread=2.5)
    manifest, npy = write_set(tmp_path / "set", emb, labels)
    runs = {c: audit.run(manifest, embeddings=npy, devices=1, progress=False, calibration=c) for c in ("none", "vector")}
    assert runs["vector"].summary["options"]["calibration"] == "vector"
    assert not np.allclose(runs["none"].pred_probs, runs["vector"].pred_probs)
    with pytest.raises(SystemExit) as stop:
        main(["--data", manifest, "--embeddings", npy, "--calibration", "platt", "--out", str(tmp_path / "o")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--calibration" in err and "Traceback" not in err


def test_tag_sets_with_step_heads_refuse_calibration_in_one_line():
    from audit.errors import UserError
    from audit.options import RunOptions

    with pytest.raises(UserError, match="--no-step-heads"):
        RunOptions(multi_label=True, calibration="temperature")
    RunOptions(multi_label=True, step_heads=False, calibration="temperature")  # the clip heads alone: fine
