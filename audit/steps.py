"""Multiple-instance steps for tag sets: each clip as a short sequence of step features, not one vector.

Notation: N clips, S steps of a clip, T steps of all clips, C step dim. A tag set names what is *in*
a clip, somewhere: one word of three, a dog barking for a second of ten. A clip's mean over its
frames blurs what one part of it holds; a step is the mean of the encoder's frames over STEP_SECONDS
(the same layer the clip's frame statistics pool: audit/encoders/), and the tag heads (instance_heads.py)
score every step and pool the steps' scores over the clip. Measured on two tag sets
(bench/RESULTS.md): AP 0.866 -> 0.951 and 0.661 -> 0.856 over the clip statistics alone.

Steps are projected to STEP_DIM by the same fixed random projection as `--frames-dim` (data-independent:
each clip's cache entry stays its own) and stored as float16; a clip longer than MAX_STEPS steps
(a long recording's windows together) is coarsened to MAX_STEPS consecutive groups, so the cache holds
at most MAX_STEPS x STEP_DIM x 2 bytes (128 KiB) per clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STEP_SECONDS = 0.1  # ~ a syllable; 10 frames of ECAPA's or the x-vector's 10 ms hop
STEP_DIM = 1024  # ECAPA's 3,072 channels -> 1,024: AP -0.006, F1 -0.013 on the digit tag set (bench/RESULTS.md)
MAX_STEPS = 64  # per clip: 6.4 s at full resolution; a 10 s AudioSet clip gets 0.16 s steps


@dataclass(frozen=True)
class Steps:
    """Every clip's steps, concatenated: clip n's are values[offsets[n]:offsets[n + 1]]."""

    values: np.ndarray  # (T, C) float16
    offsets: np.ndarray  # (N + 1,) int64

    @classmethod
    def from_list(cls, parts: list[np.ndarray], dim: int) -> Steps:
        counts = np.array([len(p) for p in parts], dtype=np.int64)
        values = np.concatenate(parts) if parts else np.zeros((0, dim), np.float16)
        return cls(values.astype(np.float16, copy=False), np.concatenate([[0], np.cumsum(counts)]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def clip(self, n: int) -> np.ndarray:
        return self.values[self.offsets[n]:self.offsets[n + 1]]

    def subset(self, rows: np.ndarray) -> Steps:
        """The steps of `rows` (R,), in that order."""
        return Steps.from_list([self.clip(int(r)) for r in rows], self.values.shape[1])

    def clip_of_step(self) -> np.ndarray:
        """(T,) the clip each step belongs to."""
        return np.repeat(np.arange(len(self)), np.diff(self.offsets))


def step_means(x: torch.Tensor, frames: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of consecutive `width`-frame steps over each clip's valid frames.

    x (B, C, L), frames (B,) -> steps (B, S, C) and counts (B,): clip b's steps are steps[b, :counts[b]],
    its full steps, or one step over all its frames when it is shorter than one step.
    """
    b, c, length = x.shape
    s = -(-length // width)
    valid = (torch.arange(s * width, device=x.device)[None, :] < frames[:, None]).to(x.dtype)  # (B, S*width)
    x = torch.nn.functional.pad(x, (0, s * width - length)) * valid[:, None, :]
    sums = x.view(b, c, s, width).sum(-1).transpose(1, 2)  # (B, S, C)
    n = valid.view(b, s, width).sum(-1, keepdim=True).clamp_min(1)  # (B, S, 1)
    counts = (frames // width).clamp_min(1)  # (B,) full steps; a short clip's one partial step
    return sums / n, counts


def coarsen(steps: np.ndarray, max_steps: int = MAX_STEPS) -> np.ndarray:
    """(S, C) -> (min(S, max_steps), C): means of consecutive near-equal groups when S > max_steps."""
    if len(steps) <= max_steps:
        return steps
    return np.stack([g.astype(np.float32).mean(0) for g in np.array_split(steps, max_steps)]).astype(steps.dtype)
