"""Clip windows -> length-bucketed, padded batches for the encoder.

Notation: N clips, B windows in a batch (a short clip is one window: windows.py), T samples (16 kHz)
of the longest in the batch. A batch is `Batch(index (B,) clip rows, wavs (B, T) zero-padded, lens
(B,) relative lengths in (0, 1], meta {name: (B,) strings}, windows (B,) window ids, failed
[(row, reason)], retry [(row, reason)])`: wavs and lens are the layout SpeechBrain's
`encode_batch(wavs, wav_lens)` takes; meta holds facts the decoding workers found on the way (the
file's SHA-1, its health); `failed` clips will never decode, `retry` ones hit a transient error
(I/O, memory) and are tried again on the next run.

Batches are formed once, globally, from the windows' lengths (sorted longest first, so the peak
memory shows up in the first batch) and only then dealt to ranks: a clip is embedded in the same
batch, with the same padding, whatever the number of processes or a resumed run's cache holds.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from audit import audio, health

PROBE_THREADS = 16  # reading headers is I/O-bound: threads hide a network file system's latency
# What may not happen again on a retry: the disk or the network file system (OSError: EIO, ESTALE, a file
# vanishing mid-run) and memory. A clip's own defects are audio.ClipError (permanent, cached); anything
# else is a bug in audit and propagates, naming the clip, instead of passing for "retried on the next run".
TRANSIENT = (OSError, MemoryError)


@dataclass(frozen=True)
class Batch:
    index: torch.Tensor  # (B,) rows of the manifest
    wavs: torch.Tensor  # (B, T) float32, zero after each clip's end
    lens: torch.Tensor  # (B,) clip length / T
    meta: dict  # {name: [str] (B,)}: each clip's file sha1 and health (audit/health.py)
    windows: list  # (B,) window id of each row (windows.py); -1 where the clip is its own window
    failed: list  # [(row, reason)] clips of this batch that cannot be decoded
    retry: list  # [(row, reason)] clips that hit a transient error: not cached, retried next run


def probe_all(files: list[str], offsets=None, durations=None) -> tuple[np.ndarray, dict[int, str]]:
    """Durations (N,) in seconds (NaN where unreadable) and {row: reason} for clips that can't be used."""
    offsets, durations = segment_arrays(len(files), offsets, durations)

    def one(i):
        try:
            return audio.probe(files[i], offsets[i], durations[i])[0], None
        except audio.ClipError as e:
            return float("nan"), str(e)

    with ThreadPoolExecutor(PROBE_THREADS) as pool:
        results = list(pool.map(one, range(len(files))))
    durations = np.array([d for d, _ in results], dtype=np.float64)  # (N,)
    failed = {i: r for i, (_, r) in enumerate(results) if r is not None}
    return durations, failed


def bucket_batches(durations: np.ndarray, batch_seconds: float) -> list[list[int]]:
    """Rows grouped so that B * (longest duration in the batch) <= batch_seconds (at least 1 clip).

    `durations` (N,) may hold NaN for rows to leave out. Deterministic: ties broken by row.
    """
    rows = [i for i in np.lexsort((np.arange(len(durations)), -durations)) if np.isfinite(durations[i])]
    batches, current, longest = [], [], 0.0
    for i in rows:
        longest_if_added = max(longest, durations[i])
        if current and (len(current) + 1) * longest_if_added > batch_seconds:
            batches.append(current)
            current, longest_if_added = [], durations[i]
        current.append(int(i))
        longest = longest_if_added
    if current:
        batches.append(current)
    return batches


class FixedBatches(Sampler):
    """A batch sampler over precomputed batches (Lightning's predict loop wraps it to track indices)."""

    def __init__(self, batches: list[list[int]]):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass(frozen=True)
class Decoded:
    """One window of a clip (windows.py) as a DataLoader worker leaves it."""

    row: int  # the clip
    wav: torch.Tensor | None  # (T,) mono 16 kHz, or None when it failed
    reason: str | None = None
    transient: bool = False  # the failure may not happen again (I/O, memory): do not cache it
    meta: dict | None = None  # {name: text}: the file's sha1 and its health (first window only)
    window: int = -1  # the window's id; -1: the clip is its own window (tests, callers without windows)


def segment_arrays(n: int, offsets=None, durations=None) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (N,) zeros where absent, durations (N,) NaN where absent: to the end of the file)."""
    offsets = np.zeros(n) if offsets is None else np.asarray(offsets, dtype=np.float64)
    durations = np.full(n, np.nan) if durations is None else np.asarray(durations, dtype=np.float64)
    return offsets, durations


class ClipDataset(Dataset):
    """Window id -> Decoded; hashing and decoding run in DataLoader workers.

    Without `windows` every clip is one window (id = row). A clip's first window also hashes its
    file and measures its health; later windows of a long clip only decode their own stretch.
    """

    def __init__(self, files: list[str], offsets=None, durations=None, windows=None, rate: int = audio.SAMPLE_RATE):
        self.files, self.rate = files, rate  # rate: the encoder's (Hz)
        self.offsets, self.durations = segment_arrays(len(files), offsets, durations)
        self.windows = windows

    def __len__(self) -> int:
        return len(self.files) if self.windows is None else len(self.windows.row)

    def __getitem__(self, item: int) -> Decoded:
        row, start, seconds = item, 0.0, float("nan")
        if self.windows is not None:
            row, start, seconds = int(self.windows.row[item]), float(self.windows.start[item]), \
                float(self.windows.seconds[item])
        if seconds != seconds:  # the whole clip (or its manifest segment)
            seconds = float(self.durations[row])
        path = self.files[row]
        try:
            meta = {}
            segment = self.offsets[row] != 0 or self.durations[row] == self.durations[row]
            if start == 0 and not segment:  # a segment shares its file's bytes with the file's other segments
                meta["sha1"] = audio.file_sha1(path)
            wav, measured = audio.decode(path, float(self.offsets[row]) + start, seconds, self.rate)
            if start == 0:
                meta.update(health.to_meta(measured))
            return Decoded(row, wav, meta=meta, window=item)
        except audio.ClipError as e:
            return Decoded(row, None, str(e), window=item)
        except TRANSIENT as e:  # skipped this run, never cached: the next run tries it again
            return Decoded(row, None, f"read error, retried on the next run: {type(e).__name__}: {e}"[:300],
                           transient=True, window=item)
        except Exception as e:
            if hasattr(e, "add_note"):  # Python 3.11+
                e.add_note(f"audit: a bug, raised while decoding {path} (row {row}, window {item})")
            raise


def collate(items: list[Decoded]) -> Batch:
    good = [d for d in items if d.wav is not None]
    longest = max((len(d.wav) for d in good), default=1)
    wavs = torch.zeros(len(good), longest)  # (B, T)
    for b, d in enumerate(good):
        wavs[b, : len(d.wav)] = d.wav
    lens = torch.tensor([len(d.wav) / longest for d in good], dtype=torch.float32)  # (B,)
    index = torch.tensor([d.row for d in good], dtype=torch.long)  # (B,)
    names = sorted({name for d in good for name in (d.meta or {})})
    meta = {name: [(d.meta or {}).get(name, "") for d in good] for name in names}
    return Batch(index=index, wavs=wavs, lens=lens, meta=meta, windows=[d.window for d in good],
                 failed=[(d.row, d.reason) for d in items if d.wav is None and not d.transient],
                 retry=[(d.row, d.reason) for d in items if d.wav is None and d.transient])
