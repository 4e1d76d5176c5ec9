"""Out-of-fold class probabilities from linear heads, trained together as one LightningModule.

Notation: N clips, D feature dim, P reduced dim, K classes, F outer folds, M heads per outer fold,
I inner folds, G l2 values. Clip n belongs to fold folds[n]; the heads of outer fold f train only on
clips outside fold f, so each row of the out-of-fold probabilities (N, K) comes from a head that
never saw that clip. All heads are one (F, M, D, K) weight: one full-batch L-BFGS run fits them all,
each masking the rows it must not see.

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
import os
import warnings

import lightning as L
from lightning.pytorch.plugins.environments import LightningEnvironment
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from audit.labels import Labels, check_counts
from audit.options import DEFAULT_L2, MIN_FOLDS, PCA_FROM_DIM

log = logging.getLogger(__name__)
INNER_FOLDS = 3  # per outer fold: enough to rank a few strengths, 3x cheaper than 5 x 5 nested CV
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)  # on standardized features; a decade apart
PCA_OVERSAMPLE = 10  # extra random directions of the randomized PCA (Halko et al. 2011)
PCA_POWER_ITERATIONS = 2
LBFGS_ITERATIONS = 200  # the problem is convex and small: L-BFGS converges well within this
# Stop when no gradient entry exceeds 1e-6 (sklearn's lbfgs stops at 1e-4): float64 keeps the optimum
# itself stable to ~1e-6 when the embeddings move by float rounding (threads, ranks).


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int, check: bool = True) -> np.ndarray:
    """Fold id (N,) per clip: each class's clips shuffled (seeded) and dealt round-robin to folds.

    `check`: apply the user-facing rule (labels.check_counts); off for strata that are not the classes.
    """
    if check:
        check_counts(Labels([str(k) for k in range(int(labels.max()) + 1)], labels), n_folds)
    counts = np.bincount(labels)
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0  # continue the deal across classes so fold sizes differ by at most one
    for c in range(len(counts)):
        rows = rng.permutation(np.flatnonzero(labels == c))
        folds[rows] = (offset + np.arange(len(rows))) % n_folds
        offset += len(rows)
    return folds


def iterative_folds(target: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold id (N,) for multi-hot `target` (N, K): iterative stratification (Sechidis et al., 2011).

    Rarest tags first, each of their clips goes to the fold that still lacks that tag most (ties: the
    fold with the most room, then a seeded draw), so every tag's count is near-equal across folds.
    """
    rng = np.random.default_rng(seed)
    n, k = target.shape
    counts = target.sum(0).astype(np.float64)  # (K,)
    demand = np.tile(counts / n_folds, (n_folds, 1))  # (F, K) clips of each tag each fold still wants
    room = np.full(n_folds, n / n_folds)  # (F,)
    folds = np.full(n, -1, dtype=np.int64)
    for tag in np.argsort(counts, kind="stable"):
        for row in rng.permutation(np.flatnonzero((target[:, tag] > 0) & (folds < 0))):
            best = np.lexsort((rng.random(n_folds), -room, -demand[:, tag]))[0]
            folds[row] = best
            demand[best] -= target[row]
            room[best] -= 1
    for row in rng.permutation(np.flatnonzero(folds < 0)):  # clips without tags: where there is room
        best = np.lexsort((rng.random(n_folds), -room))[0]
        folds[row] = best
        room[best] -= 1
    return folds


class FoldHeads(L.LightningModule):
    """F x M heads; head (f, m) reads input group g(f) of `x` and trains on the rows train_w[f, m] weighs.

    x: (G, N, D) with G = 1 (every fold reads the same rows) or G = F (a projection per fold).
    Each fold's standardization (mean, std) (F, D) is folded into its weights, so x is never copied.
    """

    def __init__(self, x: torch.Tensor, labels: np.ndarray, train_w: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor, n_classes: int, l2: torch.Tensor):
        super().__init__()
        n_folds, n_heads, _ = train_w.shape
        self.register_buffer("x", x)  # (G, N, D)
        self.multi_label = labels.ndim == 2
        # (N,) class ids, or (N, K) multi-hot targets of the one-vs-rest sigmoid heads
        self.register_buffer("labels", torch.tensor(labels, dtype=x.dtype if self.multi_label else torch.long))
        self.register_buffer("train_w", train_w)  # (F, M, N) averaging weights over each head's training rows
        self.register_buffer("mean", mean)  # (F, D)
        self.register_buffer("std", std)  # (F, D)
        self.register_buffer("l2", l2)  # (F, M)
        dim = x.shape[-1]
        self.weight = torch.nn.Parameter(torch.zeros(n_folds, n_heads, dim, n_classes, dtype=x.dtype))  # (F, M, D, K)
        self.bias = torch.nn.Parameter(torch.zeros(n_folds, n_heads, n_classes, dtype=x.dtype))  # (F, M, K)

    def logits(self) -> torch.Tensor:
        # Standardization folded into the weights: ((x - m) / s) W = x (W / s) - (m / s) W
        w = self.weight / self.std[:, None, :, None]  # (F, M, D, K)
        b = self.bias - torch.einsum("fd,fmdk->fmk", self.mean, w)  # (F, M, K)
        n_folds, n_heads, dim, k = w.shape
        n = self.x.shape[1]
        if self.x.shape[0] == 1:
            # One (N, D) x (D, F*M*K) matmul: broadcasting x to (F, N, D) would keep F copies for backward.
            z = self.x[0] @ w.permute(2, 0, 1, 3).reshape(dim, -1)  # (N, F*M*K)
            z = z.view(n, n_folds, n_heads, k).permute(1, 2, 0, 3)  # (F, M, N, K)
        else:
            z = torch.bmm(self.x, w.permute(0, 2, 1, 3).reshape(n_folds, dim, -1))  # (F, N, M*K)
            z = z.view(n_folds, n, n_heads, k).permute(0, 2, 1, 3)  # (F, M, N, K)
        return z + b[:, :, None, :]

    def training_step(self, batch, batch_idx):
        z = self.logits()  # (F, M, N, K)
        ce = clip_loss(z, self.labels)  # (F, M, N)
        loss = (ce * self.train_w).sum(-1) + self.l2 * self.weight.square().sum((-2, -1))  # (F, M)
        return loss.sum()

    def configure_optimizers(self):
        return torch.optim.LBFGS(self.parameters(), lr=1.0, max_iter=LBFGS_ITERATIONS, history_size=20,
                                 tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def train_dataloader(self):
        return DataLoader([0])  # the data lives in buffers: one full-batch step per epoch

    @torch.no_grad()
    def probs(self) -> torch.Tensor:
        z = self.logits()  # (F, M, N, K)
        return z.sigmoid() if self.multi_label else z.softmax(-1)


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
                      seed: int = 0) -> np.ndarray:
    """Out-of-fold probabilities (N, K), float64: softmax rows summing to 1 for class ids `labels` (N,),
    one sigmoid per tag for multi-hot `labels` (N, K).

    `l2` a number, or "auto": chosen per outer fold by inner cross-validation (see the module doc).
    """
    L.seed_everything(seed, verbose=False)
    fold_x, mean, std = fold_inputs(x, folds, pca_dim, seed)
    n_folds = len(mean)
    outer = torch.as_tensor(folds)[None, :] != torch.arange(n_folds)[:, None]  # (F, N) training rows
    strata = Labels(list(range(labels.shape[1])), labels).strata() if labels.ndim == 2 else None
    chosen = choose_l2(fold_x, labels, folds, mean, std, n_classes, seed, accelerator, strata) if l2 == "auto" else \
        torch.full((n_folds, 1), float(l2), dtype=torch.float64)  # (F, 1)
    p = fit_heads(fold_x, labels, outer[:, None, :], mean, std, n_classes, chosen, accelerator)[:, 0]  # (F, N, K)
    p = p[torch.as_tensor(folds), torch.arange(p.shape[1])].double().numpy()  # (N, K): each row from its own fold
    return p if labels.ndim == 2 else p / p.sum(1, keepdims=True)


def fit_heads(x, labels, train, mean, std, n_classes: int, l2, accelerator: str) -> torch.Tensor:
    """Fits F x M heads (see FoldHeads); `train` (F, M, N) bool. Returns their probabilities (F, M, N, K)."""
    train_w = train.to(x.dtype) / train.sum(-1, keepdim=True).clamp_min(1)  # (F, M, N)
    l2 = torch.as_tensor(l2, dtype=x.dtype).expand(train.shape[:2]).contiguous()  # (F, M)
    heads = FoldHeads(x, labels, train_w, mean, std, n_classes, l2)
    # One process fits the heads even inside a multi-rank job: LightningEnvironment keeps Lightning
    # from matching devices=1 against SLURM's task count.
    with _deterministic_here():
        trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            deterministic=True, plugins=[LightningEnvironment()])
        trainer.fit(heads)
    _warn_if_not_converged(trainer.optimizers[0])
    return heads.probs().cpu()


def fold_inputs(x: np.ndarray, folds: np.ndarray, pca_dim: int | None, seed: int):
    """(x (G, N, D'), mean (F, D'), std (F, D')): each fold's standardization, after its own PCA if D > pca_dim."""
    n_folds = int(folds.max()) + 1
    x_t = torch.as_tensor(x, dtype=torch.float64)  # (N, D)
    train = torch.as_tensor(folds)[None, :] != torch.arange(n_folds)[:, None]  # (F, N)
    w = train.double() / train.sum(1, keepdim=True)  # (F, N)
    mean = w @ x_t  # (F, D)
    std = (w @ x_t.square() - mean.square()).clamp_min(1e-12).sqrt()  # (F, D)
    if not pca_dim or x.shape[1] <= max(pca_dim, PCA_FROM_DIM):
        return x_t[None], mean, std
    generator = torch.Generator().manual_seed(seed)
    dim = min(pca_dim, int(train.sum(1).min()) - 1)  # the same P for every fold: at most its training rows - 1
    projected = []
    for f in range(n_folds):
        z = (x_t - mean[f]) / std[f]  # (N, D) standardized by fold f's training rows
        basis = _top_components(z[train[f]], dim, generator)  # (D, P), from training rows only
        projected.append(z @ basis)  # (N, P)
    xp = torch.stack(projected)  # (F, N, P)
    pmean = torch.stack([xp[f][train[f]].mean(0) for f in range(n_folds)])  # (F, P), ~0
    pstd = torch.stack([xp[f][train[f]].std(0) for f in range(n_folds)]).clamp_min(1e-12)  # (F, P): whitened
    return xp, pmean, pstd


def _top_components(z: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """The top-k principal directions (D, k) of centred rows z (n, D): randomized range finder, seeded."""
    omega = torch.randn(z.shape[1], k + PCA_OVERSAMPLE, generator=generator, dtype=z.dtype)  # (D, k + o)
    q = torch.linalg.qr(z @ omega).Q  # (n, k + o)
    for _ in range(PCA_POWER_ITERATIONS):  # sharpen the spectrum: wide features decay slowly
        q = torch.linalg.qr(z @ (z.T @ q)).Q
    _, _, vt = torch.linalg.svd(q.T @ z, full_matrices=False)  # (k + o, D)
    return vt[:k].T


def inner_folds(labels: np.ndarray, folds: np.ndarray, seed: int) -> np.ndarray:
    """Inner fold id (F, N) per outer fold: -1 on the outer fold's own rows, which inner validation never sees."""
    n_folds = int(folds.max()) + 1
    inner = np.full((n_folds, len(labels)), -1, dtype=np.int64)
    for f in range(n_folds):
        rows = np.flatnonzero(folds != f)
        counts = np.bincount(labels[rows])
        n_inner = min(INNER_FOLDS, int(counts[counts > 0].min()))
        if n_inner >= MIN_FOLDS:
            inner[f, rows] = stratified_folds(_dense(labels[rows]), n_inner, seed + 1 + f, check=False)
    return inner


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
    p = fit_heads(fold_x, labels, train, mean, std, n_classes, l2, accelerator)  # (F, I*G, N, K)
    held = (inner[:, None, :] == ids[None, :, None]).repeat_interleave(len(grid), dim=1)  # (F, I*G, N)
    y = torch.as_tensor(labels)
    if y.ndim == 2:  # summed binary log-loss of the one-vs-rest heads
        p = p.clamp(1e-12, 1 - 1e-12)
        nll = -(y * p.log() + (1 - y) * (1 - p).log()).sum(-1)  # (F, I*G, N)
    else:
        nll = -p[..., torch.arange(len(labels)), y].clamp_min(1e-12).log()  # (F, I*G, N)
    loss = (nll * held).sum(-1).view(n_folds, n_inner, len(grid)).sum(1)  # (F, G)
    return grid[loss.argmin(1)][:, None]  # (F, 1)


def _dense(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1]


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
def _deterministic_here():
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
