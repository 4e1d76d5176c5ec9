"""Multiple-instance steps for tag sets: step features, their cache, and the step heads."""

import tempfile

import numpy as np
import pytest
import torch

from audit import instance_heads
from audit import cache
from audit.cache import ShardStore
from audit.folds import fold_ids
from audit.steps import MAX_STEPS, Steps, coarsen, step_means


def test_step_means_pool_only_each_clips_own_frames():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 25, generator=g)  # (B, C, L)
    frames = torch.tensor([25, 13, 6])
    steps, counts = step_means(x, frames, 10)
    assert counts.tolist() == [2, 1, 1]  # full steps only; a clip shorter than one step gets one over all it has
    assert torch.allclose(steps[0, 1], x[0, :, 10:20].mean(-1))
    assert torch.allclose(steps[1, 0], x[1, :, :10].mean(-1))
    assert torch.allclose(steps[2, 0], x[2, :, :6].mean(-1))  # padding frames never enter


def test_coarsen_keeps_short_clips_and_averages_long_ones_in_order():
    short = np.arange(10, dtype=np.float16)[:, None]
    assert coarsen(short) is short
    long = np.arange(MAX_STEPS * 3, dtype=np.float32)[:, None]
    out = coarsen(long)
    assert out.shape == (MAX_STEPS, 1) and np.allclose(out[:2, 0], [1.0, 4.0])


@pytest.mark.parametrize("family", ["ecapa", "xvector"])
def test_padded_batches_give_each_clip_the_steps_it_gets_alone(family, request, fsdd_dir):
    from audit.audio import load
    from audit.encoders import resolve
    from audit.encoders.speechbrain import encode_with_steps, load_encoder

    folder = resolve(str(request.getfixturevalue("ecapa" if family == "ecapa" else "xvector_dir"))).path
    with tempfile.TemporaryDirectory() as savedir:
        encoder = load_encoder(folder, savedir)
        a, b = load(str(fsdd_dir / "3_theo_0.wav")), load(str(fsdd_dir / "7_theo_1.wav"))
        batch = torch.zeros(2, max(len(a), len(b)))
        batch[0, :len(a)], batch[1, :len(b)] = a, b
        lens = torch.tensor([len(a), len(b)]) / batch.shape[1]
        with torch.inference_mode():
            _, together, counts = encode_with_steps(encoder, batch, lens, "frames")
            for i, wav in enumerate([a, b]):
                _, alone, n = encode_with_steps(encoder, wav[None], torch.ones(1), "frames")
                assert int(n[0]) == int(counts[i]) == (len(wav) // 160 + 1) // 10  # 0.1 s steps of 10 ms frames
                if family == "ecapa":
                    assert alone.shape[-1] == 1024  # projected from ECAPA's 3,072 channels
                diff = (together[i, :counts[i]] - alone[0, :n[0]]).norm() / alone[0, :n[0]].norm()
                assert diff < 1e-3


def test_the_cache_keeps_each_clips_steps(tmp_path):
    store = ShardStore(tmp_path)
    parts = [np.full((3, 4), 1, np.float16), np.full((1, 4), 2, np.float16)]
    store.write(["a", "b"], np.zeros((2, 5), np.float32), [("c", "not audio")], tag="t", steps=parts)
    cached = store.load()
    assert cached.steps["a"].shape == (3, 4) and (cached.steps["b"] == 2).all() and "c" in cached.failed
    # a shard whose step counts do not add up is corrupt: set aside, its clips recomputed
    path = next(tmp_path.glob("shard-*.npz"))
    with np.load(path) as z:
        arrays = dict(z)
    arrays["step_counts"] = np.array([3, 2])
    arrays["digest"] = np.array(cache._digest(arrays))  # a consistent digest: the count check itself must catch it
    np.savez(path, **arrays)
    assert ShardStore(tmp_path).load().emb == {}


def planted(n=300, k=4, steps_per_clip=20, dim=32, seed=0):
    """Clips of noise steps; a tag's direction is added to one random step of each clip that has the tag:
    the clip mean holds 1/20 of it, the right step all of it."""
    rng = np.random.default_rng(seed)
    tags = (rng.random((n, k)) < 0.35).astype(np.int64)
    x = rng.normal(size=(n, steps_per_clip, dim)).astype(np.float32)
    for i, t in zip(*np.nonzero(tags)):
        x[i, rng.integers(steps_per_clip), t] += 5.0
    lengths = rng.integers(steps_per_clip // 2, steps_per_clip + 1, size=n)
    for i in range(n):  # ragged: keep the tagged steps, drop some others
        keep = np.argsort(-np.abs(x[i, :, :k]).max(1))[:lengths[i]]
        x[i, :lengths[i]] = x[i, np.sort(keep)]
    return Steps.from_list([x[i, :lengths[i]] for i in range(n)], dim), tags


def test_step_heads_find_a_tag_held_by_one_step_and_are_out_of_fold():
    from sklearn.metrics import roc_auc_score

    steps, tags = planted()
    folds = fold_ids(tags, 5, 0)
    p = instance_heads.out_of_fold_probs(steps, tags, folds, pca_dim=None)
    assert p.shape == tags.shape and np.isfinite(p).all()
    assert min(roc_auc_score(tags[:, t], p[:, t]) for t in range(tags.shape[1])) > 0.95
    mean_only = np.stack([steps.clip(i).astype(np.float32).mean(0) for i in range(len(steps))])
    from audit import heads

    p_mean = heads.out_of_fold_probs(mean_only, tags, folds, tags.shape[1])
    assert np.mean([roc_auc_score(tags[:, t], p_mean[:, t]) for t in range(4)]) < \
        np.mean([roc_auc_score(tags[:, t], p[:, t]) for t in range(4)])
    # out of fold: fold 0's probabilities do not move when fold 0's own tags change
    changed = tags.copy()
    changed[folds == 0] = 1 - changed[folds == 0]
    q = instance_heads.out_of_fold_probs(steps, changed, folds, pca_dim=None)
    assert np.allclose(p[folds == 0], q[folds == 0], atol=1e-6)
    assert not np.allclose(p[folds != 0], q[folds != 0], atol=1e-3)


def test_with_step_heads_averages_the_two_heads_logits():
    steps, tags = planted(n=120)
    folds = fold_ids(tags, 3, 0)
    stats = np.full(tags.shape, 0.5)  # logit 0: the combined logit is half the step heads'
    step_p = instance_heads.out_of_fold_probs(steps, tags, folds, pca_dim=None)
    both = instance_heads.with_step_heads(stats, steps, tags, folds, pca_dim=None)
    z = np.log(step_p) - np.log1p(-step_p)
    assert np.allclose(both, 1 / (1 + np.exp(-z / 2)), atol=1e-6)


def test_no_step_heads_keeps_tag_runs_on_the_clip_statistics(capsys):
    from dataclasses import replace

    from audit.cli import options_from, run_parser
    from audit.embed import with_steps

    opts = options_from(run_parser().parse_args(["--data", "m.csv", "--multi-label", "--no-step-heads"]), "out")
    from types import SimpleNamespace

    speechbrain, transformers = SimpleNamespace(has_steps=True), SimpleNamespace(has_steps=False)
    assert opts.multi_label and not opts.step_heads and not with_steps(opts, speechbrain)
    on = replace(opts, step_heads=True)
    assert with_steps(on, speechbrain) and not with_steps(on, transformers)
    from audit.cli import main

    assert main(["--data", "m.csv", "--no-step-heads"]) == 2  # without --multi-label: one line, not ignored
    assert "--no-step-heads" in capsys.readouterr().err


def test_each_folds_projection_whitens_its_training_steps_only():
    steps, tags = planted(n=200, dim=32)
    folds = fold_ids(tags, 4, 0)
    train = torch.as_tensor(folds)[None, :] != torch.arange(4)[:, None]
    project, shift = instance_heads.fold_projections(steps, train, pca_dim=8, seed=0)
    assert project.shape == (4, 32, 8)
    x = torch.as_tensor(steps.values).double()
    owner = torch.as_tensor(steps.clip_of_step())
    for f in range(4):
        z = (x @ project[f] + shift[f])[train[f][owner]]  # (T_f, 8)
        assert torch.allclose(z.mean(0), torch.zeros(8, dtype=z.dtype), atol=1e-6)
        assert torch.allclose(z.std(0), torch.ones(8, dtype=z.dtype), atol=1e-2)
    # the held-out clips' steps shape nothing: moving one changes no other held-out clip's probabilities
    p = instance_heads.out_of_fold_probs(steps, tags, folds, pca_dim=8)
    moved = steps.values.copy()
    i = int(np.flatnonzero(folds == 0)[0])
    moved[steps.offsets[i]:steps.offsets[i + 1]] += np.float16(3.0)
    q = instance_heads.out_of_fold_probs(Steps(moved, steps.offsets), tags, folds, pca_dim=8)
    others = (folds == 0) & (np.arange(len(folds)) != i)
    assert np.allclose(p[others], q[others], atol=1e-6) and not np.allclose(p[i], q[i], atol=1e-3)


def test_a_subset_keeps_the_chosen_clips_steps_in_order():
    steps = Steps.from_list([np.full((n, 2), n, np.float16) for n in (1, 2, 3)], 2)
    sub = steps.subset(np.array([2, 0]))
    assert np.diff(sub.offsets).tolist() == [3, 1] and (sub.clip(0) == 3).all() and (sub.clip(1) == 1).all()


def test_a_clip_without_steps_is_refused_not_turned_into_nan():
    steps = Steps.from_list([np.ones((2, 3), np.float16), np.zeros((0, 3), np.float16)], 3)
    with pytest.raises(AssertionError, match="no steps"):
        instance_heads.out_of_fold_probs(steps, np.array([[1], [0]]), np.array([0, 1]), pca_dim=None)
