"""Out-of-fold class probabilities from linear heads, trained together as one LightningModule.

Notation: N clips, D feature dim, P reduced dim, K classes, F outer folds, M heads per outer fold,
I inner folds, G l2 values. Clip n belongs to fold folds[n]; the heads of outer fold f train only on
clips outside fold f, so each row of the out-of-fold probabilities (N, K) comes from a head that
never saw that clip. All heads are one (F, M, D, K) weight, fitted together, each masking the rows it
must not see:
  - up to MINIBATCH_FROM clips: one full-batch L-BFGS run in float64, to the optimum;
  - above it: mini-batches of BATCH_ROWS rows in float32 (Adam, learning rate decayed linearly to 0),
    so memory holds one batch's (F, M, B, K) logits, never (F, M, N, K), and the cost is linear in N.
    The objective is the same (each batch's loss is scaled to estimate the full mean); tested against
    the L-BFGS optimum on FSDD (see tests/test_heads.py for the tolerance).

Per outer fold, from its training rows only:
  - standardization (mean and spread per dimension);
  - a PCA to P dims when D > P (`pca_dim`; wide frame features: 6,144-d for ECAPA), whitened;
  - the L2 strength (`l2="auto"`): I inner folds of the training rows x G strengths are fitted at
    once, and the strength with the lowest inner held-out log-loss is kept. Inner validation never
    sees the outer fold's clips.
The objective per head is multinomial logistic regression with an L2 penalty, mean cross-entropy
+ l2 * ||W||^2 -- sklearn's LogisticRegression(C) is the same objective with l2 = 1 / (2 C n).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings

import lightning as L
from lightning.pytorch.plugins.environments import LightningEnvironment
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from audit.folds import inner_folds
from audit.labels import Labels
from audit.options import DEFAULT_L2, MIN_FOLDS, PCA_FROM_DIM
from audit.principal import top_components
from audit.rows import row_blocks

log = logging.getLogger(__name__)
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)  # on standardized features; a decade apart
MINIBATCH_FROM = 50_000  # clips; above, full-batch L-BFGS costs ~1.1 s per 1k clips and (F, M, N, K) logits
BATCH_ROWS = 4096
MINIBATCH_EPOCHS = 3
MINIBATCH_MIN_STEPS = 600  # small sets get more epochs: Adam needs a few hundred steps to settle
ADAM_LR = 0.02  # on standardized features; decayed linearly to 0 over the run
PCA_SAMPLE_ROWS = 20_000  # above MINIBATCH_FROM clips, a fold's PCA basis is fitted on this many of its rows
HELD_OUT_ROWS = 20_000  # per outer fold: the inner held-out rows calibration is fitted on, at most
CHUNK_ROWS = 65_536  # rows at once wherever every clip is read outside training (moments, probabilities)
LBFGS_ITERATIONS = 200  # the problem is convex and small: L-BFGS converges well within this
# Stop when no gradient entry exceeds 1e-6 (sklearn's lbfgs stops at 1e-4): float64 keeps the optimum
# itself stable to ~1e-6 when the embeddings move by float rounding (threads, ranks).


class FoldHeads(L.LightningModule):
    """F x M heads; head (f, m) reads input group g(f) of `x` and trains on the rows train[f, m] marks.

    x: (G, N, D) with G = 1 (every fold reads the same rows) or G = F (a projection per fold).
    Each fold's standardization (mean, std) (F, D) is folded into its weights, so x is never copied.
    `batch_rows` None: full-batch L-BFGS; a number: mini-batches of that many rows for `epochs` epochs.
    """

    def __init__(self, x: torch.Tensor, labels: np.ndarray, train: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor, n_classes: int, l2: torch.Tensor, batch_rows: int | None = None,
                 epochs: int = 1, seed: int = 0):
        super().__init__()
        n_folds, n_heads, n = train.shape
        self.batch_rows, self.epochs, self.seed = batch_rows, epochs, seed
        self.register_buffer("x", x)  # (G, N, D)
        self.multi_label = labels.ndim == 2
        # (N,) class ids, or (N, K) multi-hot targets of the one-vs-rest sigmoid heads
        self.register_buffer("labels", torch.tensor(labels, dtype=x.dtype if self.multi_label else torch.long))
        # (F, M, N) averaging weights over each head's training rows
        self.register_buffer("train_w", train.to(x.dtype) / train.sum(-1, keepdim=True).clamp_min(1))
        self.register_buffer("mean", mean.to(x.dtype))  # (F, D)
        self.register_buffer("std", std.to(x.dtype))  # (F, D)
        self.register_buffer("l2", torch.as_tensor(l2, dtype=x.dtype).expand(n_folds, n_heads).contiguous())  # (F, M)
        dim = x.shape[-1]
        self.weight = torch.nn.Parameter(torch.zeros(n_folds, n_heads, dim, n_classes, dtype=x.dtype))  # (F, M, D, K)
        self.bias = torch.nn.Parameter(torch.zeros(n_folds, n_heads, n_classes, dtype=x.dtype))  # (F, M, K)

    def logits(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(F, M, R, K) for `rows` (R,) (default: all N)."""
        x = self.x if rows is None else self.x[:, rows]  # (G, R, D)
        # Standardization folded into the weights: ((x - m) / s) W = x (W / s) - (m / s) W
        w = self.weight / self.std[:, None, :, None]  # (F, M, D, K)
        b = self.bias - torch.einsum("fd,fmdk->fmk", self.mean, w)  # (F, M, K)
        n_folds, n_heads, dim, k = w.shape
        n = x.shape[1]
        if x.shape[0] == 1:
            # One (R, D) x (D, F*M*K) matmul: broadcasting x to (F, R, D) would keep F copies for backward.
            z = x[0] @ w.permute(2, 0, 1, 3).reshape(dim, -1)  # (R, F*M*K)
            z = z.view(n, n_folds, n_heads, k).permute(1, 2, 0, 3)  # (F, M, R, K)
        else:
            z = torch.bmm(x, w.permute(0, 2, 1, 3).reshape(n_folds, dim, -1))  # (F, R, M*K)
            z = z.view(n_folds, n, n_heads, k).permute(0, 2, 1, 3)  # (F, M, R, K)
        return z + b[:, :, None, :]

    def training_step(self, batch, batch_idx):
        rows = None if self.batch_rows is None else batch  # (B,) row ids of a mini-batch
        z = self.logits(rows)  # (F, M, B, K)
        if rows is None:
            labels, w = self.labels, self.train_w
        else:  # the batch's share of each head's mean loss, scaled up to estimate the whole mean
            labels, w = self.labels[rows], self.train_w[..., rows] * (self.train_w.shape[-1] / len(rows))
        ce = clip_loss(z, labels)  # (F, M, B)
        loss = (ce * w).sum(-1) + self.l2 * self.weight.square().sum((-2, -1))  # (F, M)
        return loss.sum()

    def configure_optimizers(self):
        if self.batch_rows is None:
            return torch.optim.LBFGS(self.parameters(), lr=1.0, max_iter=LBFGS_ITERATIONS, history_size=20,
                                     tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")
        optimizer = torch.optim.Adam(self.parameters(), lr=ADAM_LR)
        steps = self.trainer.estimated_stepping_batches  # epochs x batches per epoch
        decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}

    def train_dataloader(self):
        if self.batch_rows is None:
            return DataLoader([0])  # the data lives in buffers: one full-batch step per epoch
        return DataLoader(range(self.train_w.shape[-1]), batch_size=self.batch_rows, shuffle=True,
                          generator=torch.Generator().manual_seed(self.seed))

    @torch.no_grad()
    def probs(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(F, M, R, K) probabilities of `rows` (default: all N)."""
        z = self.logits(rows)
        return z.sigmoid() if self.multi_label else z.softmax(-1)

    @torch.no_grad()
    def own_fold_probs(self, folds: np.ndarray) -> np.ndarray:
        """(N, K) float64: each clip's probabilities from head (folds[n], 0), CHUNK_ROWS rows at a time."""
        folds = torch.as_tensor(folds, device=self.x.device)
        out = []
        for rows in row_chunks(len(folds), self.x.device):
            p = self.probs(rows)[:, 0]  # (F, R, K)
            out.append(p[folds[rows], torch.arange(len(rows), device=p.device)].double().cpu().numpy())
        return np.concatenate(out)


def row_chunks(n: int, device=None):
    """Row ids (R,) of consecutive chunks of at most CHUNK_ROWS rows, covering 0 .. n - 1."""
    for start in range(0, n, CHUNK_ROWS):
        yield torch.arange(start, min(start + CHUNK_ROWS, n), device=device)


def clip_loss(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-clip loss (F, M, N) of logits z (F, M, N, K): cross-entropy for class ids (N,), summed
    binary cross-entropy over the K one-vs-rest heads for multi-hot targets (N, K)."""
    if labels.ndim == 2:
        return F.binary_cross_entropy_with_logits(z, labels.expand_as(z), reduction="none").sum(-1)
    n_folds, n_heads, n, k = z.shape
    ce = F.cross_entropy(z.reshape(-1, k), labels.repeat(n_folds * n_heads), reduction="none")
    return ce.view(n_folds, n_heads, n)


def out_of_fold_probs(x: np.ndarray, labels: np.ndarray, folds: np.ndarray, n_classes: int, *,
                      l2: float | str = DEFAULT_L2, pca_dim: int | None = None, accelerator: str = "cpu",
                      seed: int = 0, held_out: bool = False):
    """Out-of-fold probabilities (N, K), float64: softmax rows summing to 1 for class ids `labels` (N,),
    one sigmoid per tag for multi-hot `labels` (N, K).

    `l2` a number, or "auto": chosen per outer fold by inner cross-validation (see the module doc).
    `held_out`: return (probabilities, inner_held_out_probs(...)), what calibration.py is fitted on.
    """
    L.seed_everything(seed, verbose=False)
    fold_x, mean, std = fold_inputs(x, folds, pca_dim, seed)
    n_folds = len(mean)
    outer = torch.as_tensor(folds)[None, :] != torch.arange(n_folds)[:, None]  # (F, N) training rows
    strata = Labels(list(range(labels.shape[1])), labels).strata() if labels.ndim == 2 else None
    chosen = choose_l2(fold_x, labels, folds, mean, std, n_classes, seed, accelerator, strata) if l2 == "auto" else \
        torch.full((n_folds, 1), float(l2), dtype=torch.float64)  # (F, 1)
    heads = fit_heads(fold_x, labels, outer[:, None, :], mean, std, n_classes, chosen, accelerator, seed)
    p = heads.own_fold_probs(folds)  # (N, K): each row from its own fold
    p = p if labels.ndim == 2 else p / p.sum(1, keepdims=True)
    if not held_out:
        return p
    inner = inner_held_out_probs(fold_x, labels, folds, mean, std, n_classes, chosen, seed, accelerator, strata)
    return p, inner


def inner_held_out_probs(fold_x, labels, folds, mean, std, n_classes: int, l2: torch.Tensor, seed: int,
                         accelerator: str, strata: np.ndarray | None = None,
                         max_rows: int = HELD_OUT_ROWS) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Per outer fold f, (rows (R,), probabilities (R, K)) of up to `max_rows` of its training rows, each
    from an inner head trained on f's training rows outside that row's inner fold, with f's `l2` (F, 1).

    What calibration is fitted on: out-of-fold probabilities of f's training rows that never saw fold f's
    clips (inner folds as `--l2 auto`'s). None where classes are too small for inner folds.
    """
    inner = torch.as_tensor(inner_folds(labels if strata is None else strata, folds, seed))  # (F, N)
    n_folds, n_inner = len(mean), int(inner.max()) + 1
    if n_inner < MIN_FOLDS or (inner < 0).all(1).any():
        return None
    ids = torch.arange(n_inner)
    train = (inner[:, None, :] >= 0) & (inner[:, None, :] != ids[None, :, None])  # (F, I, N)
    heads = fit_heads(fold_x, labels, train, mean, std, n_classes, torch.as_tensor(l2).expand(n_folds, n_inner),
                      accelerator, seed)
    rng = np.random.default_rng([seed, n_inner])
    out = []
    for f in range(n_folds):
        rows = np.flatnonzero(inner[f].numpy() >= 0)
        if len(rows) > max_rows:  # calibration has a handful of parameters: a sample of rows pins them down
            rows = np.sort(rng.choice(rows, max_rows, replace=False))
        parts = []
        for chunk in row_chunks(len(rows)):
            r = torch.as_tensor(rows[chunk.numpy()], device=heads.x.device)
            p = heads.probs(r)[f]  # (I, R, K)
            parts.append(p[inner[f, r.cpu()].to(p.device), torch.arange(len(r), device=p.device)].double().cpu().numpy())
        p = np.concatenate(parts)  # (R, K)
        out.append((rows, p if labels.ndim == 2 else p / p.sum(1, keepdims=True)))
    return out


def fit_heads(x, labels, train, mean, std, n_classes: int, l2, accelerator: str, seed: int = 0) -> FoldHeads:
    """Fits F x M heads (see FoldHeads) on `train` (F, M, N) bool; full-batch or mini-batches by N."""
    minibatch = x.shape[1] > MINIBATCH_FROM
    batches = math.ceil(x.shape[1] / BATCH_ROWS)  # per epoch
    epochs = max(MINIBATCH_EPOCHS, math.ceil(MINIBATCH_MIN_STEPS / batches)) if minibatch else 1
    heads = FoldHeads(x, labels, train, mean, std, n_classes, l2, batch_rows=BATCH_ROWS if minibatch else None,
                      epochs=epochs, seed=seed)
    trainer = fit_quietly(heads, accelerator, epochs)
    if not minibatch:
        _warn_if_not_converged(trainer.optimizers[0])
    return heads


def fit_quietly(module: L.LightningModule, accelerator: str, epochs: int) -> L.Trainer:
    """Fits `module` for `epochs` on one device in this process (no logger, checkpoints or bars), deterministically.

    LightningEnvironment keeps Lightning from matching devices=1 against SLURM's task count inside a
    multi-rank job; deterministic_here undoes the process-wide switches Trainer(deterministic=True) sets.
    """
    with deterministic_here():
        trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=epochs, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            deterministic=True, plugins=[LightningEnvironment()])
        trainer.fit(module)
    return trainer


def fold_inputs(x: np.ndarray, folds: np.ndarray, pca_dim: int | None, seed: int):
    """(x (G, N, D'), mean (F, D'), std (F, D')): each fold's standardization, after its own PCA if D > pca_dim.

    float64 up to MINIBATCH_FROM clips (the L-BFGS optimum stays put to ~1e-6 when the embeddings move
    by float rounding), so float32 input is copied once to float64 there (at most 2.5 GB: 50k x 6,144-d);
    above it float32, and float32 input (a memory map included) is used as it is, not copied. Nothing else
    (N, D) is built: each fold's PCA basis comes from its training rows (a sample of PCA_SAMPLE_ROWS of them
    above MINIBATCH_FROM clips) and the rows are centred (in float64) and projected a block at a time, so
    wide features (6,144-d ECAPA frames) cost that input once, not once per fold and temporary.
    """
    n_folds = int(folds.max()) + 1
    dtype = torch.float64 if len(x) <= MINIBATCH_FROM else torch.float32
    with warnings.catch_warnings():  # a read-only memory map (--embeddings FILE.npy): only ever read here
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        x_t = torch.as_tensor(np.asarray(x), dtype=dtype)  # (N, D)
    train = torch.as_tensor(folds)[None, :] != torch.arange(n_folds)[:, None]  # (F, N)
    mean, std = _fold_moments(x_t, torch.as_tensor(folds), n_folds)
    if not pca_dim or x.shape[1] <= max(pca_dim, PCA_FROM_DIM):
        return x_t[None], mean, std
    # The basis itself in float64 at any N: whitening lifts the weakest kept directions, and a float32
    # range finder moved them enough to change FSDD probabilities by up to 0.25 (measured).
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    dim = min(pca_dim, int(train.sum(1).min()) - 1)  # the same P for every fold: at most its training rows - 1
    xp = torch.empty(n_folds, len(x), dim, dtype=dtype)  # (F, N, P)
    for f in range(n_folds):
        sample = np.flatnonzero(train[f].numpy())
        if len(x) > MINIBATCH_FROM and len(sample) > PCA_SAMPLE_ROWS:
            sample = np.sort(rng.choice(sample, PCA_SAMPLE_ROWS, replace=False))
        z = x_t[torch.as_tensor(sample)].double()  # (S, D): a copy (indexed), standardized in place below
        z -= mean[f]
        z /= std[f]
        basis = top_components(z, dim, generator)  # (D, P)
        del z
        scaled = (basis / std[f][:, None]).to(dtype)  # (D, P): ((x - m) / s) B = (x - m) (B / s)
        for rows in row_blocks(len(x), x.shape[1], max_rows=CHUNK_ROWS):
            # centred in float64 (a float32 shift after the product cancelled: wide features' means are
            # large), multiplied in the run's dtype. Out of place: x_t[rows].double() is x_t itself in float64
            xp[f, rows] = (x_t[rows].double() - mean[f]).to(dtype) @ scaled
    pmean = torch.stack([xp[f][train[f]].double().mean(0) for f in range(n_folds)])  # (F, P), ~0
    pstd = torch.stack([xp[f][train[f]].double().std(0) for f in range(n_folds)]).clamp_min(1e-12)  # (F, P): whitened
    return xp, pmean, pstd


def _fold_moments(x: torch.Tensor, folds: torch.Tensor, n_folds: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (F, D) float64 of each fold's training rows (all rows outside fold f), in row chunks."""
    sums = torch.zeros(n_folds, x.shape[1], dtype=torch.float64)  # (F, D) per fold's own rows
    squares = torch.zeros_like(sums)
    for rows in row_blocks(len(x), x.shape[1], max_rows=CHUNK_ROWS):
        chunk = x[rows].double()  # (R, D)
        one_hot = F.one_hot(folds[rows], n_folds).double()  # (R, F)
        sums += one_hot.T @ chunk
        squares += one_hot.T @ chunk.square()
    counts = torch.bincount(folds, minlength=n_folds).double()  # (F,)
    n_train = (len(x) - counts)[:, None]  # (F, 1)
    mean = (sums.sum(0) - sums) / n_train
    std = ((squares.sum(0) - squares) / n_train - mean.square()).clamp_min(1e-12).sqrt()
    return mean, std


def choose_l2(fold_x, labels, folds, mean, std, n_classes: int, seed: int, accelerator: str,
              strata: np.ndarray | None = None) -> torch.Tensor:
    """Per outer fold, the L2_GRID value with the lowest inner held-out log-loss: (F, 1)."""
    inner = torch.as_tensor(inner_folds(labels if strata is None else strata, folds, seed))  # (F, N)
    n_folds, grid = len(mean), torch.tensor(L2_GRID, dtype=torch.float64)
    n_inner = int(inner.max()) + 1
    if n_inner < MIN_FOLDS or (inner < 0).all(1).any():  # classes too small for inner folds: the default
        return torch.full((n_folds, 1), DEFAULT_L2, dtype=torch.float64)
    ids = torch.arange(n_inner)
    # head (f, i * G + g) trains on outer-training rows outside inner fold i, with strength g
    train = (inner[:, None, :] >= 0) & (inner[:, None, :] != ids[None, :, None])  # (F, I, N)
    train = train.repeat_interleave(len(grid), dim=1)  # (F, I*G, N)
    l2 = grid.repeat(n_inner)[None, :].expand(n_folds, -1)  # (F, I*G)
    heads = fit_heads(fold_x, labels, train, mean, std, n_classes, l2, accelerator, seed)
    held = (inner[:, None, :] == ids[None, :, None]).repeat_interleave(len(grid), dim=1)  # (F, I*G, N)
    y = torch.as_tensor(labels)
    loss = torch.zeros(held.shape[:2], dtype=torch.float64)  # (F, I*G) summed held-out log-loss
    for rows in row_chunks(len(labels)):
        p = heads.probs(rows.to(heads.x.device)).cpu().double()  # (F, I*G, R, K)
        if y.ndim == 2:  # summed binary log-loss of the one-vs-rest heads
            p = p.clamp(1e-12, 1 - 1e-12)
            nll = -(y[rows] * p.log() + (1 - y[rows]) * (1 - p).log()).sum(-1)  # (F, I*G, R)
        else:
            nll = -p[..., torch.arange(len(rows)), y[rows]].clamp_min(1e-12).log()  # (F, I*G, R)
        loss += (nll * held[..., rows]).sum(-1)
    loss = loss.view(n_folds, n_inner, len(grid)).sum(1)  # (F, G)
    return grid[loss.argmin(1)][:, None]  # (F, 1)


def _warn_if_not_converged(optimizer: torch.optim.LBFGS) -> None:
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    group = optimizer.param_groups[0]
    max_iter = group["max_iter"]
    # L-BFGS stops early once the gradient or the step is tiny; hitting a budget means it did not.
    if state.get("n_iter", 0) >= max_iter or state.get("func_evals", 0) >= group["max_eval"]:
        message = (f"the linear heads did not converge in {max_iter} L-BFGS iterations; the probabilities may be "
                   "less sharp than they should be (a larger --l2 makes the problem easier)")
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


@contextlib.contextmanager
def deterministic_here():
    """Trainer(deterministic=True) switches deterministic algorithms on for the whole process: undo it."""
    algorithms, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark, cublas = torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas
