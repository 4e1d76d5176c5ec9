"""The embedding stage on real FSDD audio with the real ECAPA weights (and an x-vector built here)."""

import numpy as np
import pytest
import torch

from audit import audio
from audit.batching import Decoded, bucket_batches, collate
from audit.cache import ShardStore
from audit.embed import embed, store_for
from audit.encoders import resolve
from audit.encoders.speechbrain import encode, load_encoder
from audit.errors import UserError
from audit.options import RunOptions

NAMES = [f"{d}_{s}_{n}.wav" for d in range(10) for s in ("theo", "george") for n in (0, 1)]


@pytest.fixture(scope="module")
def ecapa_encoder(ecapa, cache_dir):
    return load_encoder(resolve(ecapa).path, cache_dir)


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


@pytest.mark.parametrize("batch_seconds", [4.0, 1000.0])  # bucketed, and one wide batch of mixed lengths
def test_a_clip_in_a_padded_batch_matches_the_clip_alone(fsdd_dir, ecapa_encoder, batch_seconds):
    wavs = [audio.load(str(fsdd_dir / n)) for n in NAMES]
    durations = np.array([len(w) / audio.SAMPLE_RATE for w in wavs])
    with torch.inference_mode():
        alone = torch.stack([ecapa_encoder.encode_batch(w[None]).squeeze() for w in wavs])  # (N, D)
        for rows in bucket_batches(durations, batch_seconds):
            batch = collate([Decoded(i, wavs[i]) for i in rows])
            assert (batch.lens < 1).any(), "the test needs padding in the batch"
            together = encode(ecapa_encoder, batch.wavs, batch.lens)  # (B, D)
            assert together.shape == (len(rows), 192)
            assert cosine(together, alone[rows]).min() > 0.99999
            torch.testing.assert_close(together, alone[rows], rtol=0, atol=1e-4 * alone.abs().max().item())


def test_plain_padding_would_change_the_embeddings(fsdd_dir, ecapa_encoder):
    """Why padding.py exists: without it SpeechBrain's reflect padding sees the batch's zeros."""
    short, long = sorted((audio.load(str(fsdd_dir / n)) for n in ("1_theo_0.wav", "0_george_0.wav")), key=len)
    batch = collate([Decoded(0, short), Decoded(1, long)])
    with torch.inference_mode():
        alone = ecapa_encoder.encode_batch(short[None]).squeeze()
        plain = ecapa_encoder.encode_batch(batch.wavs, batch.lens)[0].squeeze()
        fixed = encode(ecapa_encoder, batch.wavs, batch.lens)[0]
    assert batch.lens[0] < 0.9
    assert cosine(plain, alone) < 0.999 < cosine(fixed, alone)


def opts(encoder, cache_dir, **kw):
    return RunOptions(encoder=encoder, cache_dir=str(cache_dir), accelerator="cpu", devices=1, batch_seconds=4.0,
                      num_workers=1, progress=False, **kw)


def test_cache_reuses_done_clips_and_recomputes_corrupt_shards(tmp_path, fsdd_dir, ecapa):
    files = [str(fsdd_dir / n) for n in NAMES]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage")
    first = embed(files + [str(bad)], opts(ecapa, tmp_path, features="embedding"))
    assert first.emb.shape == (41, 192) and first.n_computed == 40
    assert list(first.failed) == [40] and "unreadable" in first.failed[40]
    assert np.isfinite(first.emb[:40]).all() and np.isnan(first.emb[40]).all()

    again = embed(files, opts(ecapa, tmp_path, features="embedding"))
    assert again.n_computed == 0
    assert again.emb.tobytes() == first.emb[:40].tobytes()

    store = store_for(opts(ecapa, tmp_path, features="embedding"))[0].folder
    shard = sorted(store.glob("shard-*.npz"))[0]
    shard.write_bytes(shard.read_bytes()[:200])  # a shard cut short, as by a crash without atomic writes
    healed = embed(files, opts(ecapa, tmp_path, features="embedding"))
    assert 0 < healed.n_computed <= 40
    assert list(store.glob("*.corrupt"))
    np.testing.assert_allclose(healed.emb, first.emb[:40], rtol=0, atol=1e-5)


def test_shard_with_a_wrong_digest_is_not_trusted(tmp_path):
    store = ShardStore(tmp_path)
    path = store.write(["a" * 40], np.ones((1, 4), np.float32), [], tag="t")
    with np.load(path) as z:
        arrays = dict(z)
    arrays["emb"] = arrays["emb"] * 2  # content changed, digest not: bit rot or tampering
    np.savez(path, **arrays)
    contents = store.load()
    assert contents.emb == {} and contents.failed == {}


def test_xvector_layout_loads_from_a_local_folder(xvector_dir, tmp_path, fsdd_dir):
    encoder = load_encoder(resolve(str(xvector_dir)).path, tmp_path)  # padding fix applied by the check
    result = embed([str(fsdd_dir / n) for n in NAMES[:6]], opts(str(xvector_dir), tmp_path, features="embedding"))
    assert result.emb.shape == (6, 512) and np.isfinite(result.emb).all()
    wav = audio.load(str(fsdd_dir / NAMES[0]))
    with torch.inference_mode():
        alone = encoder.encode_batch(wav[None]).squeeze()
    np.testing.assert_allclose(result.emb[0], alone.numpy(), rtol=0, atol=1e-4 * float(alone.abs().max()))


@pytest.mark.parametrize("source, message", [
    ("not an id", "neither a local folder, a Hugging Face id"),
    (".", "no hyperparams.yaml"),
])
def test_unknown_encoders_are_user_errors(tmp_path, source, message):
    with pytest.raises(UserError, match=message):
        resolve(source).path


def test_hub_id_that_cannot_be_fetched_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here; on a user's machine: a bad id
    with pytest.raises(UserError, match="could not load it"):
        resolve("speechbrain/no-such-model-xyz").path


class _Payload:
    """Unpickling this would create a file: the test checks that it never happens."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_unpickles_code_is_refused(xvector_dir, tmp_path):
    """Weights load with torch.load(weights_only=True) (PyTorch's default since 2.6, kept in 2.11)."""
    import shutil

    folder = tmp_path / "evil"
    shutil.copytree(xvector_dir, folder)
    marker = tmp_path / "pwned"
    torch.save({"count": 1, "glob_mean": _Payload(str(marker))}, folder / "mean_var_norm_emb.ckpt")
    with pytest.raises(UserError, match="could not load it"):
        load_encoder(resolve(str(folder)).path, tmp_path / "cache")
    assert not marker.exists()


@pytest.mark.parametrize("features, dim", [("frames", 6144), ("frames+embedding", 6144 + 192)])
def test_pooled_frame_features_of_a_padded_batch_match_the_clip_alone(fsdd_dir, ecapa_encoder, features, dim):
    wavs = [audio.load(str(fsdd_dir / n)) for n in NAMES[:8]]
    with torch.inference_mode():
        alone = torch.cat([encode(ecapa_encoder, w[None], torch.ones(1), features) for w in wavs])  # (N, D)
        batch = collate([Decoded(i, w) for i, w in enumerate(wavs)])  # one batch, mixed lengths
        assert (batch.lens < 0.8).any(), "the test needs padding in the batch"
        together = encode(ecapa_encoder, batch.wavs, batch.lens, features)  # (B, D)
    assert together.shape == (8, dim) and np.isfinite(together.numpy()).all()
    order = batch.index.tolist()
    torch.testing.assert_close(together, alone[order], rtol=1e-3, atol=1e-4 * alone.abs().max().item())


def test_xvector_frames_pool_its_last_tdnn_layer(xvector_dir, tmp_path, fsdd_dir):
    encoder = load_encoder(resolve(str(xvector_dir)).path, tmp_path)
    wavs = [audio.load(str(fsdd_dir / n)) for n in NAMES[:4]]
    batch = collate([Decoded(i, w) for i, w in enumerate(wavs)])
    with torch.inference_mode():
        together = encode(encoder, batch.wavs, batch.lens, "frames")
        alone = encode(encoder, wavs[batch.index[-1]][None], torch.ones(1), "frames")
    assert together.shape == (4, 3000)  # 1,500 channels: mean and std
    torch.testing.assert_close(together[-1:], alone, rtol=1e-3, atol=1e-4 * alone.abs().max().item())


def test_cache_keeps_each_representation_apart(tmp_path, fsdd_dir, xvector_dir):
    files = [str(fsdd_dir / n) for n in NAMES[:4]]
    emb = embed(files, opts(str(xvector_dir), tmp_path, features="embedding"))
    frames = embed(files, opts(str(xvector_dir), tmp_path, features="frames"))
    assert emb.emb.shape == (4, 512) and frames.emb.shape == (4, 3000) and frames.n_computed == 4
    projected = embed(files, opts(str(xvector_dir), tmp_path, features="frames", frames_dim=256))
    assert projected.emb.shape == (4, 256) and projected.n_computed == 4  # its own cache folder


def test_the_frames_projection_is_fixed_and_orthonormal():
    from audit.encoders.speechbrain import project, projection

    q = projection(600, 64)
    torch.testing.assert_close(q.T @ q, torch.eye(64), atol=1e-5, rtol=0)
    x = torch.randn(5, 600)
    torch.testing.assert_close(project(x, 64), x @ q)
    assert torch.equal(projection.__wrapped__(600, 64), q)  # the same matrix when built again (seeded)
    assert project(x, 0) is x and project(x, 1000) is x  # 0 or wider: kept whole
