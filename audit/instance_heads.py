"""Tag heads over each clip's steps (multiple-instance learning): out-of-fold tag probabilities from PyTorch.

Notation: N clips, T steps of all clips, C step dim, P reduced dim, K tags, F outer folds, B clips in a
batch. A tag is in a clip if it is in some part of it (steps.py). Per outer fold f, from its training
clips' steps only: standardization, a PCA to P dims (`pca_dim`), whitened; one linear head scores every
step for every tag, and a clip's logit for a tag is the log-mean-exp of its steps' logits at temperature
TAU: a soft maximum, between the mean (TAU -> inf, the clip statistics' view) and the maximum (TAU -> 0,
one step decides). Trained on the clips' tag sets with the summed binary cross-entropy + L2 * ||W||^2,
all F folds as one LightningModule (Adam, learning rate decayed linearly to 0), in batches of whole clips.

The standardization and the PCA are folded into each fold's weights (logits = x A_f W_f + c_f), so the
steps (T, C) are held once, on the host (float32 up to FLOAT32_BYTES, float16 above), never projected
per fold; each batch's steps go to the device on their own. Batches are whole clips, about BATCH_STEPS
steps: the device holds one batch's (F, steps, K) logits. The PCA applies whenever the steps (STEP_DIM)
are wider than `pca_dim` (the clip statistics are reduced only above options.PCA_FROM_DIM).

`with_step_heads` averages these heads' logits with the clip-statistics heads' (heads.py): on the words
tag set the step heads alone flagged many clean clips (precision 0.73) and the pair had the best F1; on
the digit set the pair kept the step heads' AP (bench/RESULTS.md).
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from audit.heads import fit_quietly
from audit.principal import top_components
from audit.steps import Steps

TAU = 2.0  # 0.25-8 swept on the digit tag set (2-4 best), 1-4 on the words set (flat): bench/RESULTS.md
L2 = 1e-3  # on whitened step features; 1e-2 lost AP on both tag sets
ADAM_LR = 0.02
MIN_STEPS = 300  # optimizer steps: one full batch per step up to BATCH_STEPS steps in all
MIN_EPOCHS = 3
BATCH_STEPS = 32_768  # per batch (whole clips): (F, steps, K) float32 logits, ~350 MB at K = 527
FLOAT32_BYTES = 1 << 30  # steps held as float32 up to this size, float16 (converted per batch) above
PCA_ROWS = 100_000  # steps sampled per fold for its PCA: the basis settles long before, memory stays bounded
CHUNK_STEPS = 65_536  # steps read at once for the moments and the probabilities


class StepHeads(L.LightningModule):
    """F linear step heads, each trained on the clips its fold marks, pooled per clip by log-mean-exp."""

    def __init__(self, steps: Steps, labels: np.ndarray, train: torch.Tensor, project: torch.Tensor,
                 shift: torch.Tensor, seed: int = 0):
        super().__init__()
        n_folds = len(train)
        self.seed = seed
        x = torch.as_tensor(steps.values)  # (T, C) float16
        # plain attributes, not buffers: they stay on the host; a batch's steps move on their own
        self.x = x.float() if x.numel() * 4 <= FLOAT32_BYTES else x  # converting per batch costs ~1/3 of a step
        self.offsets = torch.as_tensor(steps.offsets)  # (N + 1,)
        self.register_buffer("labels", torch.as_tensor(labels, dtype=torch.float32))  # (N, K)
        self.register_buffer("train_mask", train)  # (F, N) bool
        self.register_buffer("project", project.float())  # (F, C, P): standardize + PCA + whiten
        self.register_buffer("shift", shift.float())  # (F, P)
        self.weight = torch.nn.Parameter(torch.zeros(n_folds, project.shape[-1], labels.shape[1]))  # (F, P, K)
        self.bias = torch.nn.Parameter(torch.zeros(n_folds, labels.shape[1]))  # (F, K)
        self.n_batches = 1

    def clip_logits(self, clips: torch.Tensor) -> torch.Tensor:
        """(F, B, K) logits of `clips` (B,): log-mean-exp over each clip's steps at temperature TAU."""
        device = self.weight.device
        clips = clips.cpu()
        starts, counts = self.offsets[clips], self.offsets[clips + 1] - self.offsets[clips]  # (B,)
        owner = torch.repeat_interleave(torch.arange(len(clips)), counts)  # (S_b,)
        first = torch.repeat_interleave(starts - (torch.cumsum(counts, 0) - counts), counts)
        rows = first + torch.arange(len(owner))  # (S_b,) step ids of these clips
        x = self.x if len(rows) == len(self.x) else self.x[rows]  # every clip, in order: no copy
        x, owner, counts = x.to(device, non_blocking=True), owner.to(device), counts.to(device)
        w = torch.einsum("fcp,fpk->fck", self.project, self.weight)  # (F, C, K)
        b = torch.einsum("fp,fpk->fk", self.shift, self.weight) + self.bias  # (F, K)
        n_folds, _, k = w.shape
        z = x.float() @ w.permute(1, 0, 2).reshape(w.shape[1], -1)  # (S_b, F*K)
        z = z.view(-1, n_folds, k).permute(1, 0, 2) + b[:, None, :]  # (F, S_b, K)
        index = owner[None, :, None].expand_as(z)
        top = torch.full((n_folds, len(clips), k), -torch.inf, device=device).scatter_reduce(
            1, index, z, "amax").detach()  # (F, B, K): for a stable exp
        e = ((z - top.gather(1, index)) / TAU).exp()
        total = torch.zeros_like(top).scatter_add(1, index, e)  # (F, B, K)
        return top + TAU * (total / counts[None, :, None]).log()

    def training_step(self, clips, batch_idx):
        clips = clips.sort().values  # the loss ignores the order; a whole set in order needs no step copy
        mine = self.train_mask[:, clips].float()  # (F, B)
        z = self.clip_logits(clips)  # (F, B, K)
        bce = F.binary_cross_entropy_with_logits(z, self.labels[clips].expand_as(z), reduction="none").sum(-1)  # (F, B)
        # each batch's share of the fold's mean loss, scaled to estimate the whole mean
        per_fold = (bce * mine).sum(-1) / self.train_mask.sum(-1).clamp_min(1) * self.n_batches
        return (per_fold + L2 * self.weight.square().sum((1, 2))).sum()

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=ADAM_LR)
        steps = self.trainer.estimated_stepping_batches
        decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}

    def train_dataloader(self):
        n = len(self.offsets) - 1
        return DataLoader(range(n), batch_size=batch_clips(self.offsets), shuffle=True,
                          generator=torch.Generator().manual_seed(self.seed), collate_fn=torch.tensor)

    @torch.no_grad()
    def own_fold_probs(self, folds: np.ndarray) -> np.ndarray:
        """(N, K) float64: each clip's tag probabilities from the head of its own (held-out) fold."""
        folds, size, out = torch.as_tensor(folds), batch_clips(self.offsets), []
        for start in range(0, len(folds), size):
            clips = torch.arange(start, min(start + size, len(folds)))
            z = self.clip_logits(clips).cpu()  # (F, B, K)
            out.append(z[folds[clips], torch.arange(len(clips))].sigmoid().double().numpy())
        return np.concatenate(out)


def batch_clips(offsets: torch.Tensor) -> int:
    """Clips per batch: about BATCH_STEPS steps at the set's mean steps per clip (at least one clip)."""
    n = len(offsets) - 1
    return max(1, min(n, BATCH_STEPS * n // max(1, int(offsets[-1]))))


def out_of_fold_probs(steps: Steps, labels: np.ndarray, folds: np.ndarray, *, pca_dim: int | None,
                      accelerator: str = "cpu", seed: int = 0) -> np.ndarray:
    """Out-of-fold tag probabilities (N, K) from the step heads; `labels` (N, K) multi-hot."""
    empty = np.flatnonzero(np.diff(steps.offsets) == 0)
    assert not len(empty), f"clip rows {empty[:5].tolist()} have no steps: leave them out before the step heads"
    L.seed_everything(seed, verbose=False)
    n_folds = int(folds.max()) + 1
    train = torch.as_tensor(folds)[None, :] != torch.arange(n_folds)[:, None]  # (F, N)
    project, shift = fold_projections(steps, train, pca_dim, seed)
    heads = StepHeads(steps, labels, train, project, shift, seed)
    batches = math.ceil(len(steps) / batch_clips(heads.offsets))
    heads.n_batches = batches
    epochs = max(MIN_EPOCHS if batches > 1 else 1, math.ceil(MIN_STEPS / batches))
    fit_quietly(heads, accelerator, epochs)
    return heads.own_fold_probs(folds)


def fold_projections(steps: Steps, train: torch.Tensor, pca_dim: int | None, seed: int):
    """Per fold, (A (F, C, P), a (F, P)) with x A_f + a_f the fold's standardized, PCA'd, whitened steps."""
    x = torch.as_tensor(steps.values)  # (T, C) float16
    owner = torch.as_tensor(steps.clip_of_step())  # (T,)
    generator = torch.Generator().manual_seed(seed)
    projects, shifts = [], []
    for fold_train in train:
        mine = torch.nonzero(fold_train[owner]).squeeze(1)  # (T_f,) this fold's training steps
        total, squares = torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], dtype=torch.float64)
        for start in range(0, len(mine), CHUNK_STEPS):
            chunk = x[mine[start:start + CHUNK_STEPS]].double()
            total += chunk.sum(0)
            squares += chunk.square().sum(0)
        mean = total / len(mine)
        std = (squares / len(mine) - mean.square()).clamp_min(1e-12).sqrt()  # (C,)
        sample = mine[torch.randperm(len(mine), generator=generator)[:PCA_ROWS]]
        z = (x[sample].double() - mean) / std  # (R, C)
        if pca_dim and x.shape[1] > pca_dim:
            dim = min(pca_dim, len(sample) - 1)
            basis = top_components(z - z.mean(0), dim, generator)  # (C, P)
        else:
            basis = torch.eye(x.shape[1], dtype=torch.float64)
        projected = z @ basis  # (R, P)
        pmean, pstd = projected.mean(0), projected.std(0).clamp_min(1e-12)  # (P,)
        project = basis / std[:, None] / pstd[None, :]  # (C, P)
        projects.append(project)
        shifts.append(-(mean @ project) - pmean / pstd)
    return torch.stack(projects), torch.stack(shifts)


def with_step_heads(stats_probs: np.ndarray, steps: Steps, labels: np.ndarray, folds: np.ndarray, *,
                    pca_dim: int | None, accelerator: str = "cpu", seed: int = 0) -> np.ndarray:
    """(N, K): the mean of the clip-statistics heads' and the step heads' out-of-fold logits, as probabilities."""
    step_probs = out_of_fold_probs(steps, labels, folds, pca_dim=pca_dim, accelerator=accelerator, seed=seed)
    return _sigmoid((_logit(stats_probs) + _logit(step_probs)) / 2)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))
