import numpy as np
import torch
import pytest

from audit.errors import UserError
from audit.folds import stratified_folds
from audit.heads import out_of_fold_probs


def blobs(n_per_class=60, n_classes=4, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    x = centers[labels] + rng.normal(0, 1, (len(labels), dim)) + 50  # offset: standardization matters
    return x.astype(np.float32), labels


def test_folds_are_stratified_and_cover_each_clip_once():
    labels = np.repeat(np.arange(3), [10, 23, 7])
    folds = stratified_folds(labels, 5, seed=1)
    assert folds.shape == labels.shape and set(folds) == set(range(5))
    for c in range(3):
        counts = np.bincount(folds[labels == c], minlength=5)
        assert counts.max() - counts.min() <= 1
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
    assert np.array_equal(folds, stratified_folds(labels, 5, seed=1))
    assert not np.array_equal(folds, stratified_folds(labels, 5, seed=2))


def test_a_class_smaller_than_the_folds_is_a_user_error():
    with pytest.raises(UserError, match="fewer than --folds 5"):
        stratified_folds(np.array([0] * 10 + [1] * 3), 5, seed=0)


def test_oof_probs_are_distributions_and_learn_the_classes():
    x, labels = blobs()
    folds = stratified_folds(labels, 5, seed=0)
    p = out_of_fold_probs(x, labels, folds, 4)
    assert p.shape == (240, 4)
    assert np.allclose(p.sum(1), 1) and (p >= 0).all()
    assert (p.argmax(1) == labels).mean() > 0.95


@pytest.mark.parametrize("minibatch", [False, True])
def test_a_clips_own_label_never_reaches_its_own_probabilities(minibatch, monkeypatch):
    """Out-of-fold means the head that scores a clip never trained on it: flip it, nothing changes.
    Both paths: full-batch L-BFGS, and the mini-batches large sets get (4 batches per epoch here)."""
    from audit import heads

    if minibatch:
        monkeypatch.setattr(heads, "MINIBATCH_FROM", 0)
        monkeypatch.setattr(heads, "BATCH_ROWS", 64)
    x, labels = blobs(seed=3)
    folds = stratified_folds(labels, 5, seed=0)
    p = out_of_fold_probs(x, labels, folds, 4)
    flipped = labels.copy()
    flipped[17] = (labels[17] + 1) % 4
    q = out_of_fold_probs(x, flipped, folds, 4)
    assert np.allclose(p[17], q[17], atol=1e-5)
    others = folds != folds[17]
    assert not np.allclose(p[others], q[others], atol=1e-5)  # the heads that saw it did change


def test_same_seed_same_probabilities_byte_for_byte():
    x, labels = blobs(seed=5)
    folds = stratified_folds(labels, 5, seed=0)
    assert out_of_fold_probs(x, labels, folds, 4, seed=0).tobytes() == out_of_fold_probs(x, labels, folds, 4, seed=0).tobytes()


def test_a_fit_that_runs_out_of_iterations_says_so(monkeypatch):
    from audit import heads

    x, labels = blobs(seed=1)
    folds = stratified_folds(labels, 5, seed=0)
    monkeypatch.setattr(heads, "LBFGS_ITERATIONS", 2)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        out_of_fold_probs(x, labels, folds, 4)


def test_fitting_leaves_deterministic_algorithms_as_they_were():
    import torch

    x, labels = blobs(seed=2)
    before = torch.are_deterministic_algorithms_enabled()
    out_of_fold_probs(x, labels, stratified_folds(labels, 5, seed=0), 4)
    assert torch.are_deterministic_algorithms_enabled() == before


def test_inner_folds_never_hold_the_outer_folds_own_clips():
    from audit.folds import INNER_FOLDS, inner_folds

    _, labels = blobs(n_per_class=30, seed=4)
    folds = stratified_folds(labels, 5, seed=0)
    inner = inner_folds(labels, folds, seed=0)
    assert inner.shape == (5, len(labels))
    for f in range(5):
        assert (inner[f, folds == f] == -1).all()
        assert set(inner[f, folds != f]) == set(range(INNER_FOLDS))


@pytest.mark.parametrize("kw", [dict(l2="auto"), dict(pca_dim=8), dict(l2="auto", pca_dim=8)])
def test_out_of_fold_holds_through_inner_selection_and_pca(kw, monkeypatch):
    """Flip one clip's label: its own probabilities must not move, whatever the heads chose from the rest."""
    from audit import heads

    monkeypatch.setattr(heads, "PCA_FROM_DIM", 0)  # these 24-d blobs stand in for wide features
    x, labels = blobs(seed=6, dim=24)
    folds = stratified_folds(labels, 5, seed=0)
    p = out_of_fold_probs(x, labels, folds, 4, **kw)
    flipped = labels.copy()
    flipped[17] = (labels[17] + 1) % 4
    q = out_of_fold_probs(x, flipped, folds, 4, **kw)
    assert np.allclose(p.sum(1), 1)
    assert np.allclose(p[17], q[17], atol=1e-5)
    assert (p.argmax(1) == labels).mean() > 0.9


@pytest.mark.filterwarnings("ignore:the linear heads did not converge")  # separable blobs at l2 = 1e-3
@pytest.mark.parametrize("signal", ["none", "strong"])
def test_l2_auto_picks_the_strength_the_data_calls_for(signal, monkeypatch):
    """Labels unrelated to the features: the strongest penalty (the prior) has the lowest held-out loss;
    well-separated classes: the weakest. Neither is DEFAULT_L2: a selection stuck on it fails here."""
    from audit import heads
    from audit.options import DEFAULT_L2

    if signal == "none":
        x, labels = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32), np.repeat(np.arange(4), 50)
    else:
        x, labels = blobs(n_per_class=50, seed=3)
    expected = max(heads.L2_GRID) if signal == "none" else min(heads.L2_GRID)
    assert expected != DEFAULT_L2
    folds = stratified_folds(labels, 5, seed=0)
    used = []  # the l2 of each fit: the inner grid (choose_l2), then the final heads with the choice per fold
    fit = heads.fit_heads
    monkeypatch.setattr(heads, "fit_heads", lambda *a, **k: used.append(a[6]) or fit(*a, **k))
    out_of_fold_probs(x, labels, folds, 4, l2="auto")
    assert used[-1].ravel().tolist() == [expected] * 5


@pytest.mark.parametrize("large", [False, True])
def test_pca_is_fitted_on_each_folds_training_rows_only(large, monkeypatch):
    """`large`: the path above MINIBATCH_FROM clips (float32, the basis from a sample of the training rows,
    rows projected a few at a time) must keep the same guarantee."""
    from audit import heads
    from audit.heads import fold_inputs

    monkeypatch.setattr(heads, "PCA_FROM_DIM", 0)  # these 24-d blobs stand in for wide features
    if large:
        monkeypatch.setattr(heads, "MINIBATCH_FROM", 50)
        monkeypatch.setattr(heads, "PCA_SAMPLE_ROWS", 70)
        monkeypatch.setattr("audit.rows.BLOCK_BYTES", 8 * 24 * 13)  # 13 rows at a time
    x, labels = blobs(seed=7, dim=24)
    folds = stratified_folds(labels, 5, seed=0)
    xp, _, _ = fold_inputs(x, folds, pca_dim=6, seed=0)
    moved = x.copy()
    moved[folds == 0] += np.random.default_rng(0).normal(0, 50, moved[folds == 0].shape).astype(np.float32)
    xq, _, _ = fold_inputs(moved, folds, pca_dim=6, seed=0)
    assert xp.shape == (5, len(x), 6)
    # fold 0's projection never saw its own rows: changing them leaves its training rows' coordinates alone
    np.testing.assert_allclose(xp[0][folds != 0].numpy(), xq[0][folds != 0].numpy(), rtol=1e-6, atol=1e-6 if large else 1e-12)
    assert xp.dtype == (torch.float32 if large else torch.float64)
    assert not np.allclose(xp[1][folds != 1].numpy(), xq[1][folds != 1].numpy())


def test_narrow_features_are_used_whole():
    from audit.heads import fold_inputs

    x, labels = blobs(seed=8, dim=192)  # a final embedding's width
    xp, _, _ = fold_inputs(x, stratified_folds(labels, 5, seed=0), pca_dim=128, seed=0)
    assert xp.shape == (1, len(x), 192)


def test_minibatch_heads_match_the_lbfgs_optimum_on_fsdd(subset_dir, ecapa, cache_dir, monkeypatch):
    """Real FSDD frame features (6,144-d, per-fold PCA): mini-batches of 32 rows in float32 land on the
    float64 L-BFGS optimum within 0.05 per probability, with the same flagged clips (README states it)."""
    from audit import heads
    from audit.label_issues import find_label_issues
    from audit.options import DEFAULT_FILTER_BY, RunOptions
    from audit.pipeline import embed_dataset

    data = embed_dataset(RunOptions(data=str(subset_dir), encoder=ecapa, cache_dir=str(cache_dir), devices=1,
                                    progress=False).resolve())
    k = len(data.classes)
    folds = stratified_folds(data.labels, 5, seed=0)
    full = out_of_fold_probs(data.emb, data.labels, folds, k, pca_dim=128)
    monkeypatch.setattr(heads, "MINIBATCH_FROM", 0)
    monkeypatch.setattr(heads, "BATCH_ROWS", 128)  # 2 batches per epoch: real mini-batch noise
    mini = out_of_fold_probs(data.emb, data.labels, folds, k, pca_dim=128)
    assert np.abs(full - mini).max() < 0.05  # 0.011 measured; 0.020 on all 3,000 FSDD digits in batches of 256
    assert np.abs(full - mini).mean() < 0.002
    assert (full.argmax(1) == mini.argmax(1)).all()
    flagged = [find_label_issues(data.labels, p, filter_by=DEFAULT_FILTER_BY).flagged for p in (full, mini)]
    assert flagged[0].sum() >= 3 and np.array_equal(*flagged)


@pytest.mark.parametrize("option", [dict(folds="5"), dict(window_seconds="10"), dict(l2="0.1"), dict(seed="1"),
                                    dict(batch_seconds=True), dict(pca_dim="256")])
def test_an_api_option_of_the_wrong_type_is_one_line_not_a_type_error(option):
    from audit.options import RunOptions

    with pytest.raises(UserError, match=f"--{next(iter(option)).replace('_', '-')}"):
        RunOptions(**option)


def test_repeated_cross_validation_averages_its_splits_and_its_first_split_is_the_single_one():
    """pipeline.repeated_out_of_fold: split 0 is the split a run made before (same seed), and 3 splits are the
    mean of the three out_of_fold probabilities, each still out of fold; auto repeats only small sets."""
    from audit.folds import fold_ids
    from audit.options import FOLD_REPEATS_AUTO, FOLD_REPEATS_MAX_CLIPS, fold_repeats_for
    from audit.pipeline import FOLD_SEED_STEP, out_of_fold, repeated_out_of_fold

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    x = (np.eye(3)[labels] * 1.5 + rng.normal(0, 1, (120, 3))).astype(np.float32)
    fit = dict(l2=0.01, pca_dim=None, calibration="none", accelerator="cpu")

    def single(seed):
        return out_of_fold(x, labels, fold_ids(labels, 5, seed), 3, seed=seed, **fit)

    one = repeated_out_of_fold(x, labels, 3, n_folds=5, fold_repeats=1, seed=7, **fit)
    np.testing.assert_array_equal(one, single(7))
    three = repeated_out_of_fold(x, labels, 3, n_folds=5, fold_repeats=3, seed=7, **fit)
    np.testing.assert_array_equal(repeated_out_of_fold(x, labels, 3, n_folds=5, fold_repeats="auto", seed=7, **fit),
                                  three)  # auto on 120 clips of class labels: 3 splits
    np.testing.assert_allclose(three, np.mean([single(7 + FOLD_SEED_STEP * j) for j in range(3)], 0), rtol=1e-6)
    np.testing.assert_allclose(three.sum(1), 1.0, rtol=1e-5)
    assert not np.allclose(three, one)  # the other splits moved the probabilities
    assert fold_repeats_for("auto", FOLD_REPEATS_MAX_CLIPS) == FOLD_REPEATS_AUTO
    assert fold_repeats_for("auto", FOLD_REPEATS_MAX_CLIPS + 1) == 1 and fold_repeats_for(2, 10**7) == 2
    assert fold_repeats_for("auto", 1500, multi_label=True) == 1
