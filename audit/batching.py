"""Clips -> length-bucketed, padded batches for the encoder.

Notation: N clips, B clips in a batch, T samples (16 kHz) of the longest clip in the batch.
A batch is `Batch(index (B,), wavs (B, T) zero-padded, lens (B,) relative lengths in (0, 1],
failed [(index, reason)])`: the layout SpeechBrain's `encode_batch(wavs, wav_lens)` takes.

Batches are formed once, globally, from the clips' durations (sorted longest first, so the peak
memory shows up in the first batch) and only then dealt to ranks: a clip is embedded in the same
batch, with the same padding, whatever the number of processes or a resumed run's cache holds.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from audit import audio

DEFAULT_BATCH_SECONDS = {"cpu": 8.0, "gpu": 256.0}  # padded audio seconds per batch: on CPU small
# batches stay in cache (measured best of 4/8/16 s on FSDD, bench/RESULTS.md); a GPU wants them wide
PROBE_THREADS = 16  # reading headers is I/O-bound: threads hide a network file system's latency


@dataclass(frozen=True)
class Batch:
    index: torch.Tensor  # (B,) rows of the manifest
    wavs: torch.Tensor  # (B, T) float32, zero after each clip's end
    lens: torch.Tensor  # (B,) clip length / T
    failed: list  # [(row, reason)] clips of this batch that could not be decoded


def probe_all(files: list[str]) -> tuple[np.ndarray, dict[int, str]]:
    """Durations (N,) in seconds (NaN where unreadable) and {row: reason} for clips that can't be used."""
    def one(f):
        try:
            return audio.probe(f)[0], None
        except audio.ClipError as e:
            return float("nan"), str(e)

    with ThreadPoolExecutor(PROBE_THREADS) as pool:
        results = list(pool.map(one, files))
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


class ClipDataset(Dataset):
    """Row -> (row, waveform (T,) or None, reason or None); decoding runs in DataLoader workers."""

    def __init__(self, files: list[str]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, row: int):
        try:
            return row, audio.load(self.files[row]), None
        except audio.ClipError as e:
            return row, None, str(e)
        except Exception as e:  # a clip must never take the run down with it
            return row, None, f"decoding failed: {type(e).__name__}: {e}"


def collate(items) -> Batch:
    good = [(row, wav) for row, wav, _ in items if wav is not None]
    failed = [(row, reason) for row, wav, reason in items if wav is None]
    longest = max((len(w) for _, w in good), default=1)
    wavs = torch.zeros(len(good), longest)  # (B, T)
    for b, (_, wav) in enumerate(good):
        wavs[b, : len(wav)] = wav
    lens = torch.tensor([len(w) / longest for _, w in good], dtype=torch.float32)  # (B,)
    index = torch.tensor([row for row, _ in good], dtype=torch.long)  # (B,)
    return Batch(index=index, wavs=wavs, lens=lens, failed=failed)
