import numpy as np
import pytest
import torch

from audit.batching import ClipDataset, Decoded, bucket_batches, collate, probe_all


def test_buckets_cover_each_clip_once_within_budget():
    rng = np.random.default_rng(0)
    d = rng.uniform(0.2, 3.0, 500)
    d[[3, 77]] = np.nan  # unreadable clips stay out
    batches = bucket_batches(d, batch_seconds=8.0)
    rows = [r for b in batches for r in b]
    assert sorted(rows) == sorted(set(range(500)) - {3, 77})
    for b in batches:
        assert len(b) == 1 or len(b) * d[b].max() <= 8.0
    longest = [d[b].max() for b in batches]
    assert longest == sorted(longest, reverse=True)  # longest first: peak memory shows up at once
    assert bucket_batches(d, 8.0) == batches


def test_a_clip_longer_than_the_budget_gets_a_batch_of_its_own():
    assert bucket_batches(np.array([1.0, 20.0, 1.0]), 8.0) == [[1], [0, 2]]


def test_collate_pads_with_zeros_and_gives_relative_lengths():
    items = [Decoded(4, torch.ones(100), meta={"sha1": "a"}), Decoded(7, None, "unreadable audio: x"),
             Decoded(9, torch.full((40,), 2.0), meta={"sha1": "b"}), Decoded(11, None, "read error: EIO", transient=True)]
    batch = collate(items)
    assert batch.wavs.shape == (2, 100)
    assert batch.index.tolist() == [4, 9]
    assert torch.equal(batch.lens, torch.tensor([1.0, 0.4]))
    assert (batch.wavs[1, 40:] == 0).all() and (batch.wavs[1, :40] == 2).all()
    assert batch.failed == [(7, "unreadable audio: x")]
    assert batch.retry == [(11, "read error: EIO")] and batch.meta == {"sha1": ["a", "b"]}


def test_dataset_turns_bad_files_into_reasons(tmp_path, fsdd_dir):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    ds = ClipDataset([str(fsdd_dir / "0_george_0.wav"), str(bad)])
    assert ds[0].wav is not None and ds[0].reason is None and len(ds[0].meta["sha1"]) == 40
    assert ds[0].meta["health_rate"] == "8000"
    assert ds[1].wav is None and "unreadable" in ds[1].reason and not ds[1].transient
    durations, failed = probe_all([str(fsdd_dir / "0_george_0.wav"), str(bad)])
    assert durations[0] > 0 and np.isnan(durations[1]) and list(failed) == [1]


def test_a_bug_while_decoding_propagates_and_only_io_errors_are_retried(monkeypatch, fsdd_dir):
    """A programming error (here in a health check) is not "retried on the next run"; an OSError is."""
    from audit import audio, health

    ds = ClipDataset([str(fsdd_dir / "0_george_0.wav")])

    def broken(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(health, "clip_health", broken)
    with pytest.raises(ZeroDivisionError):
        ds[0]

    def stale(path):
        raise OSError(116, "Stale file handle")

    monkeypatch.undo()
    monkeypatch.setattr(audio, "file_sha1", stale)
    got = ds[0]
    assert got.wav is None and got.transient and "retried on the next run" in got.reason
