"""Calibrated out-of-fold probabilities: the heads' confidence made to mean what it says.

Notation: N clips, K classes (or tags), F outer folds, R held-out rows of one fold. The linear heads
are under- or over-confident depending on the data (their L2 penalty and PCA width are fixed), and every
rule that sizes the flagged set reads the probabilities' values, not only their order. Per outer fold f,
a calibration map is fitted on the inner held-out probabilities of f's training rows
(heads.inner_held_out_probs: heads that never saw fold f) and applied to fold f's own out-of-fold rows,
so no clip's calibration saw that clip. The inner heads train on ~2/3 of f's training rows, so they are
a little less sure than fold f's own head: the fitted map may sharpen slightly more than it should.
Tag sets with step heads are refused (options.py): their final logits mix in heads calibration never saw.

Methods (measured on every evaluation set: bench/cut_study.py, bench/RESULTS.md):
  temperature  one scale per fold on the log-probabilities (softmax(log p / T)); tags: one per tag
  vector       a scale and a bias per class (tags: per tag; Platt scaling), on the log-probabilities
Class ids: softmax over K; tags (multi-hot labels): each tag's sigmoid on its own.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from audit.options import CALIBRATIONS as METHODS

EPS = 1e-12
MAX_ITER = 100
PENALTY = 1e-3  # L2 on the log-scales and biases: a class or tag with few held-out rows stays near no change
log = logging.getLogger(__name__)


def calibrate(probs: np.ndarray, labels: np.ndarray, folds: np.ndarray, held_out, method: str) -> np.ndarray:
    """(N, K) calibrated copy of the out-of-fold `probs`: fold f's rows through the map fitted on held_out[f].

    `held_out`: heads.inner_held_out_probs' list of (rows, probs) per fold, or None (too few clips per class
    for inner folds: returned unchanged).
    """
    assert method in METHODS, method
    if method == "none":
        return probs
    if held_out is None:
        log.warning("--calibration %s: classes too small for inner folds; the probabilities are left uncalibrated",
                    method)
        return probs
    out = probs.copy()
    for f, (rows, p) in enumerate(held_out):
        own = folds == f
        scale, bias = fit(p, labels[rows], method)
        out[own] = apply(probs[own], scale, bias, multi_label=labels.ndim == 2)
    return out


def _logits(p: torch.Tensor, multi_label: bool) -> torch.Tensor:
    p = p.clamp(EPS, 1 - EPS) if multi_label else p.clamp_min(EPS)
    return (p.log() - (1 - p).log()) if multi_label else p.log()


def fit(p: np.ndarray, labels: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(scale, bias) (K,) each minimizing the held-out log-loss of `p` (R, K) against `labels`."""
    multi_label = labels.ndim == 2
    z = _logits(torch.as_tensor(p, dtype=torch.float64), multi_label)  # (R, K)
    k = z.shape[1]
    y = torch.as_tensor(labels, dtype=torch.float64 if multi_label else torch.long)
    per_class = method == "vector" or multi_label  # a tag's temperature is its own
    log_scale = torch.zeros(k if per_class else 1, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=method == "vector")
    params = [log_scale] + ([bias] if method == "vector" else [])
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=MAX_ITER, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        out = z * log_scale.exp() + bias
        value = (torch.nn.functional.binary_cross_entropy_with_logits(out, y, reduction="sum") / len(y)
                 if multi_label else torch.nn.functional.cross_entropy(out, y))
        value = value + PENALTY * (log_scale.square().sum() + bias.square().sum())
        value.backward()
        return value

    optimizer.step(loss)
    scale = log_scale.detach().exp().expand(k).numpy().copy()
    return scale, bias.detach().numpy().copy()


def apply(p: np.ndarray, scale: np.ndarray, bias: np.ndarray, *, multi_label: bool) -> np.ndarray:
    """`p` (R, K) through a fitted map: rows summing to 1 again for class ids, each tag's sigmoid for tags."""
    z = _logits(torch.as_tensor(p, dtype=torch.float64), multi_label) * torch.as_tensor(scale) + torch.as_tensor(bias)
    return (z.sigmoid() if multi_label else z.softmax(-1)).numpy()
