"""Recordings of any length: each clip becomes one or more windows, and its embedding pools theirs.

Notation: N clips, W windows, B windows in a batch. A clip no longer than `window` seconds is one
window covering all of it (exactly what it embedded before windows existed). A longer one is cut
into windows of `window` seconds every `hop` seconds; a last piece shorter than MIN_LAST_SECONDS is
dropped (unless it is the only one). Each window is read on its own from the file (soundfile seeks),
so a one-hour recording never sits in memory whole. The clip's embedding is the mean of its
windows', weighted by their length (embed.py's ShardWriter pools them as they arrive).

Work is dealt to ranks in units: a short clip's batch is a unit; all the batches of one long clip
are one unit, so one rank sees every window of a clip and the cache stays one entry per clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.batching import bucket_batches

MIN_LAST_SECONDS = 1.0  # a shorter tail adds noise, not evidence


@dataclass(frozen=True)
class Windows:
    row: np.ndarray  # (W,) clip row of each window
    start: np.ndarray  # (W,) seconds from the clip's start
    seconds: np.ndarray  # (W,) length; NaN: to the clip's end (a clip that is one window)
    length: np.ndarray  # (W,) seconds, finite: for bucketing and for the pooling weights

    def count(self, n_clips: int) -> np.ndarray:
        """(N,) windows per clip."""
        return np.bincount(self.row, minlength=n_clips)


def cut(durations: np.ndarray, window: float, hop: float) -> Windows:
    """Windows of every clip with a finite duration (N,) (NaN: a clip left out)."""
    rows, starts, seconds, lengths = [], [], [], []
    for i in np.flatnonzero(np.isfinite(durations)):
        d = float(durations[i])
        if d <= window:
            rows.append(i), starts.append(0.0), seconds.append(np.nan), lengths.append(d)
            continue
        for s in np.arange(0.0, d, hop):
            n = min(window, d - s)
            if n < MIN_LAST_SECONDS and s > 0:
                break
            rows.append(i), starts.append(float(s)), seconds.append(n), lengths.append(n)
            if s + window >= d:  # this window reached the end: a later one would only re-read the tail
                break
    return Windows(np.array(rows, dtype=np.int64), np.array(starts), np.array(seconds), np.array(lengths))


def units(windows: Windows, batch_seconds: float) -> list[list[list[int]]]:
    """[[batch of window ids, ...] per unit]: one unit per long clip (row order), then one per short-clip
    batch (longest first)."""
    per_clip = windows.count(int(windows.row.max()) + 1 if len(windows.row) else 0)
    long = per_clip[windows.row] > 1  # (W,)
    out = []
    per_batch = max(1, int(batch_seconds // max(windows.length[long].max(initial=1.0), 1e-9)))
    # cut() lists each clip's windows together, in row order: a long clip's ids are one contiguous run
    rows, first, n = np.unique(windows.row, return_index=True, return_counts=True)
    for start, count in zip(first[n > 1], n[n > 1]):
        ids = list(range(int(start), int(start + count)))
        out.append([ids[i : i + per_batch] for i in range(0, len(ids), per_batch)])
    short = np.flatnonzero(~long)
    lengths = np.full(len(windows.row), np.nan)
    lengths[short] = windows.length[short]
    out += [[batch] for batch in bucket_batches(lengths, batch_seconds)]
    return out
