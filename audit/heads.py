"""Out-of-fold class probabilities from F linear heads, trained together as one LightningModule.

Notation: N clips, D embedding dim, K classes, F folds. Clip n belongs to fold folds[n]; head f
trains on every clip outside fold f and predicts the clips inside it, so each row of the
out-of-fold probabilities (N, K) comes from the one head that never saw that clip. All F heads
are one (F, D, K) weight: one full-batch L-BFGS run fits them all, each fold masking its held-out
rows. Each head standardizes the embeddings with its own training rows' mean and spread.

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

from audit.errors import UserError
from audit.options import DEFAULT_L2, MIN_FOLDS

log = logging.getLogger(__name__)
LBFGS_ITERATIONS = 200  # the problem is convex and small: L-BFGS converges well within this
# Stop when no gradient entry exceeds 1e-6 (sklearn's lbfgs stops at 1e-4): float64 keeps the optimum
# itself stable to ~1e-6 when the embeddings move by float rounding (threads, ranks).


def check_class_counts(labels, n_folds: int, where: str = "") -> None:
    """The rule of stratified folds: at least 2 classes, and every class with >= n_folds clips."""
    assert n_folds >= MIN_FOLDS, n_folds
    counts = pd.Series(np.asarray(labels)).value_counts()
    where = f" {where}" if where else ""
    if len(counts) < 2:
        raise UserError(f"only one class ({counts.index[0]!r}){where}: finding label errors needs at least 2")
    small = counts[counts < n_folds]
    if len(small):
        raise UserError(f"class {small.index[0]!r} has {small.iloc[0]} clip(s){where}, fewer than --folds "
                        f"{n_folds}: add clips, drop the class, or lower --folds")


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold id (N,) per clip: each class's clips shuffled (seeded) and dealt round-robin to folds."""
    check_class_counts(labels, n_folds)
    counts = np.bincount(labels)
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0  # continue the deal across classes so fold sizes differ by at most one
    for c in range(len(counts)):
        rows = rng.permutation(np.flatnonzero(labels == c))
        folds[rows] = (offset + np.arange(len(rows))) % n_folds
        offset += len(rows)
    return folds


class FoldHeads(L.LightningModule):
    def __init__(self, x: np.ndarray, labels: np.ndarray, folds: np.ndarray, n_classes: int, l2: float):
        super().__init__()
        n_folds = int(folds.max()) + 1
        x_t = torch.as_tensor(x, dtype=torch.float64)  # (N, D)
        train = torch.as_tensor(folds)[None, :] != torch.arange(n_folds)[:, None]  # (F, N)
        w = train.double() / train.sum(1, keepdim=True)  # (F, N) averaging weights over training rows
        mean = w @ x_t  # (F, D)
        std = (w @ x_t.square() - mean.square()).clamp_min(1e-12).sqrt()  # (F, D)
        self.register_buffer("x", x_t)
        self.register_buffer("labels", torch.tensor(labels, dtype=torch.long))  # (N,)
        self.register_buffer("folds", torch.tensor(folds, dtype=torch.long))  # (N,)
        self.register_buffer("train_w", w)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.weight = torch.nn.Parameter(torch.zeros(n_folds, x.shape[1], n_classes, dtype=torch.float64))  # (F, D, K)
        self.bias = torch.nn.Parameter(torch.zeros(n_folds, n_classes, dtype=torch.float64))  # (F, K)
        self.l2 = l2

    def logits(self) -> torch.Tensor:
        # Standardization folded into the weights: ((x - m) / s) W = x (W / s) - (m / s) W
        w = self.weight / self.std[:, :, None]  # (F, D, K)
        b = self.bias - torch.einsum("fd,fdc->fc", self.mean, w)  # (F, K)
        n_folds, dim, n_classes = w.shape
        # One (N, D) x (D, F*K) matmul: einsum would broadcast x to (F, N, D) and keep it for backward.
        z = self.x @ w.permute(1, 0, 2).reshape(dim, n_folds * n_classes)  # (N, F*K)
        return z.view(-1, n_folds, n_classes).transpose(0, 1) + b[:, None, :]  # (F, N, K)

    def training_step(self, batch, batch_idx):
        z = self.logits()  # (F, N, K)
        n_folds, n, c = z.shape
        ce = F.cross_entropy(z.reshape(-1, c), self.labels.repeat(n_folds), reduction="none").view(n_folds, n)
        loss = (ce * self.train_w).sum(1) + self.l2 * self.weight.square().sum((1, 2))  # (F,)
        return loss.sum()

    def configure_optimizers(self):
        return torch.optim.LBFGS(self.parameters(), lr=1.0, max_iter=LBFGS_ITERATIONS, history_size=20,
                                 tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def train_dataloader(self):
        return DataLoader([0])  # the data lives in buffers: one full-batch step per epoch

    @torch.no_grad()
    def oof_probs(self) -> np.ndarray:
        p = self.logits().softmax(-1)  # (F, N, K)
        return p[self.folds, torch.arange(p.shape[1], device=p.device)].double().cpu().numpy()  # (N, K)


def out_of_fold_probs(x: np.ndarray, labels: np.ndarray, folds: np.ndarray, n_classes: int, *,
                      l2: float = DEFAULT_L2, accelerator: str = "cpu", seed: int = 0) -> np.ndarray:
    """Out-of-fold softmax probabilities (N, K), float64, each row summing to 1."""
    L.seed_everything(seed, verbose=False)
    heads = FoldHeads(x, labels, folds, n_classes, l2)
    # One process fits the heads even inside a multi-rank job: LightningEnvironment keeps Lightning
    # from matching devices=1 against SLURM's task count.
    with _deterministic_here():
        trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            deterministic=True, plugins=[LightningEnvironment()])
        trainer.fit(heads)
    _warn_if_not_converged(trainer.optimizers[0])
    p = heads.oof_probs()
    return p / p.sum(1, keepdims=True)


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
