"""Top principal directions of a row set by a seeded randomized range finder (Halko, Martinsson, Tropp 2011).

Notation: n rows, D columns, k directions. Used where a few directions of wide rows are needed and a
full (D, D) eigendecomposition would cost seconds to minutes (D = 6,144 for ECAPA frame features): the
heads' per-fold PCA (heads.py, instance_heads.py) and the k-NN graph's projection (datalab.py).
"""

from __future__ import annotations

import torch

PCA_OVERSAMPLE = 10  # extra random directions beyond k
PCA_POWER_ITERATIONS = 2  # sharpen the spectrum: wide features decay slowly


def top_components(z: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """The top-k right singular directions (D, k) of rows z (n, D), seeded: the principal directions when z is
    centred (heads), the best k-dim subspace for dot products between the rows when it is not (datalab)."""
    omega = torch.randn(z.shape[1], k + PCA_OVERSAMPLE, generator=generator, dtype=z.dtype)  # (D, k + o)
    q = torch.linalg.qr(z @ omega).Q  # (n, k + o)
    for _ in range(PCA_POWER_ITERATIONS):  # sharpen the spectrum: wide features decay slowly
        q = torch.linalg.qr(z @ (z.T @ q)).Q
    _, _, vt = torch.linalg.svd(q.T @ z, full_matrices=False)  # (k + o, D)
    return vt[:k].T
