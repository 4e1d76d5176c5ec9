"""The embedding cache: what keys it, what it keeps, and what it refuses to keep."""

import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from audit import audio, cache
from audit.cache import ShardStore, cache_folder, clip_keys
from audit.embed import embed, store_for
from audit.encoders import folder_identity as encoder_identity
from audit.options import RunOptions

NAMES = [f"{d}_theo_{n}.wav" for d in range(3) for n in range(2)]


def opts(encoder, cache_dir, **kw):
    return RunOptions(encoder=encoder, cache_dir=str(cache_dir), accelerator="cpu", devices=1, batch_seconds=4.0,
                      num_workers=0, progress=False, **kw)


def test_folder_changes_with_precision_pipeline_and_encoder_files(tmp_path, xvector_dir, monkeypatch):
    folder = tmp_path / "enc"
    shutil.copytree(xvector_dir, folder)
    ident = encoder_identity(folder)
    base = cache_folder(tmp_path, "enc", ident, precision="32-true")
    assert base == cache_folder(tmp_path, "enc", encoder_identity(folder), precision="32-true")
    assert base != cache_folder(tmp_path, "enc", ident, precision="bf16-mixed")
    yaml = folder / "hyperparams.yaml"
    stat = yaml.stat()
    yaml.write_text(yaml.read_text().replace("n_mels: 24", "n_mels: 25"))
    os.utime(yaml, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same time stamp: the content still counts
    assert encoder_identity(folder) != ident
    monkeypatch.setattr(cache, "PIPELINE_VERSION", cache.PIPELINE_VERSION + "-next")
    assert cache_folder(tmp_path, "enc", ident, precision="32-true") != base


def test_bf16_then_fp32_into_one_cache_recomputes_every_embedding(tmp_path, fsdd_dir, xvector_dir):
    files = [str(fsdd_dir / n) for n in NAMES]
    bf16 = embed(files, opts(str(xvector_dir), tmp_path, precision="bf16-mixed"))
    fp32 = embed(files, opts(str(xvector_dir), tmp_path, precision="32-true"))
    assert bf16.n_computed == fp32.n_computed == len(files)
    assert not np.array_equal(bf16.emb, fp32.emb)
    assert embed(files, opts(str(xvector_dir), tmp_path, precision="32-true")).n_computed == 0


def test_a_transient_read_error_is_retried_on_the_next_run(tmp_path, fsdd_dir, xvector_dir, monkeypatch):
    files = [str(fsdd_dir / n) for n in NAMES]
    real = audio.file_sha1

    def flaky(path):
        if path == files[2]:
            raise OSError(116, "Stale file handle")
        return real(path)

    monkeypatch.setattr(audio, "file_sha1", flaky)  # num_workers=0: decoding runs in this process
    first = embed(files, opts(str(xvector_dir), tmp_path))
    assert list(first.failed) == [2] and "retried on the next run" in first.failed[2]
    assert "Stale file handle" in first.failed[2]
    store = store_for(opts(str(xvector_dir), tmp_path))[0]
    assert clip_keys(files[2:3])[0] not in store.load().failed  # never cached as a failure
    monkeypatch.setattr(audio, "file_sha1", real)
    second = embed(files, opts(str(xvector_dir), tmp_path))
    assert second.failed == {} and second.n_computed >= 1
    assert np.isfinite(second.emb).all()


def test_a_decoding_failure_is_cached_and_a_header_failure_is_probed_again(tmp_path, fsdd_dir, xvector_dir):
    """As README and cache.py say: a clip that fails while decoding for good (NaN samples) is cached with
    its reason; one the header read rules out (not audio) never reaches the cache and is read again each run."""
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio, whatever the extension says\n" * 20)
    nan = tmp_path / "nan.wav"
    wav = np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32)
    wav[100] = np.nan  # a valid header: only decoding finds it
    sf.write(nan, wav, 8000, subtype="FLOAT")
    files = [str(fsdd_dir / n) for n in NAMES] + [str(bad), str(nan)]
    o = opts(str(xvector_dir), tmp_path / "c")
    first = embed(files, o)
    assert "unreadable" in first.failed[len(NAMES)] and "non-finite" in first.failed[len(NAMES) + 1]
    bad_key, nan_key = clip_keys(files[-2:])
    assert store_for(o)[0].load().failed == {nan_key: first.failed[len(NAMES) + 1]}
    again = embed(files, o)
    assert again.n_computed == 0 and again.failed == first.failed  # nothing decoded again; bad.wav probed again


@pytest.mark.parametrize("step", ["savez", "replace"])
def test_a_shard_write_failing_midway_keeps_the_old_shards_and_leaves_no_partial_file(tmp_path, monkeypatch, step):
    store = ShardStore(tmp_path)
    old = store.write(["a" * 40], np.ones((1, 4), np.float32), [("c" * 40, "too short")], tag="t")

    def half_written(f, **arrays):
        f.write(b"PK\x03\x04 the first bytes of a zip")  # on disk, then the disk fills up (or a kill)
        raise OSError(28, "No space left on device")

    def no_rename(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(*((np, "savez", half_written) if step == "savez" else (cache.os, "replace", no_rename)))
    with pytest.raises(OSError):
        store.write(["b" * 40], np.zeros((1, 4), np.float32), [], tag="t")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [old.name]  # no temp file, no half shard
    got = store.load()
    assert list(got.emb) == ["a" * 40] and got.failed == {"c" * 40: "too short"}
    np.testing.assert_array_equal(got.emb["a" * 40], np.ones(4))


def test_shards_carry_each_clips_sha1(tmp_path, fsdd_dir, xvector_dir):
    files = [str(fsdd_dir / n) for n in NAMES]
    result = embed(files, opts(str(xvector_dir), tmp_path))
    assert [m["sha1"] for m in result.meta] == [audio.file_sha1(f) for f in files]
    again = embed(files, opts(str(xvector_dir), tmp_path))  # from the cache: no file is read again
    assert again.n_computed == 0 and again.meta == result.meta


def test_two_readers_setting_aside_the_same_corrupt_shard_do_not_fail(tmp_path):
    store = ShardStore(tmp_path)
    path = store.write(["a" * 40], np.ones((1, 4), np.float32), [], tag="t")
    path.write_bytes(path.read_bytes()[:100])
    other = ShardStore(tmp_path)
    assert store.load().emb == {}  # moves it aside
    assert other._read(path) is None  # a second job that listed it before: no traceback
    assert list(tmp_path.glob("*.corrupt"))


def test_meta_and_failures_round_trip(tmp_path):
    store = ShardStore(tmp_path)
    store.write(["a" * 40, "b" * 40], np.eye(2, dtype=np.float32), [("c" * 40, "too short")], tag="t",
                meta={"sha1": ["x", "y"]})
    got = store.load()
    assert got.meta == {"a" * 40: {"sha1": "x"}, "b" * 40: {"sha1": "y"}}
    assert got.failed == {"c" * 40: "too short"}
    np.testing.assert_array_equal(got.emb["b" * 40], [0, 1])
    with pytest.raises(AssertionError):
        store.write(["a" * 40], np.ones((1, 2), np.float32), [], tag="t", meta={"sha1": []})
