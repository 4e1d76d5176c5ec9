"""Which clips each cross-validation fold holds: the outer folds of the heads and the inner folds of `--l2 auto`.

Notation: N clips, K classes or tags, F folds. Every function is seeded: the same labels and seed give
the same folds on every machine.
"""

from __future__ import annotations

import numpy as np

from audit.labels import Labels, check_counts
from audit.options import MIN_FOLDS

INNER_FOLDS = 3  # per outer fold: enough to rank a few strengths, 3x cheaper than 5 x 5 nested CV


def fold_ids(labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """(N,) fold per clip, stratified by class, or iteratively by every tag for tag sets."""
    if labels.ndim == 1:
        return stratified_folds(labels, n_folds, seed)
    return iterative_folds(labels, n_folds, seed)


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


def _dense(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1]
