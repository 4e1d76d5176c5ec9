"""More than label errors: cleanlab's Datalab issue types from the same embeddings and probabilities.

Notation: N clips, K classes, D embedding dim. From `emb` (N, D) and the out-of-fold `pred_probs`
(N, K), Datalab finds outliers (clips unlike their class or the dataset: noise, silence, another
language), near-duplicates (the same recording under two names leaks across train/test splits),
non-IID ordering (only where the rows keep the user's order: audit's own order of a folder is
sorted by label, and a non-IID score would measure that sort), class imbalance and underperforming
groups. Exact duplicates are found from the files' SHA-1 (hashed once, in the decoding workers), so
a copied file is named as such even where its embedding is not unique.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd

ISSUE_TYPES = ("outlier", "near_duplicate", "non_iid", "class_imbalance", "underperforming_group")
MULTILABEL_TYPES = ("outlier", "near_duplicate", "non_iid")  # what Datalab supports for task="multilabel"
KNN_K = 10  # neighbours per clip: Datalab's own default
KNN_BLOCK_BYTES = 64 * 2**20  # similarity block in memory at once: memory stays flat as N grows


@dataclass(frozen=True)
class DataIssues:
    summary: pd.DataFrame  # issue_type, score, num_issues (Datalab's summary)
    per_clip: pd.DataFrame  # (N rows) is_<type>_issue, <type>_score for each type found
    duplicate_groups: pd.DataFrame  # group, kind (exact|near), row


def knn_graph(emb: np.ndarray, k: int = KNN_K, device: str = "cpu"):
    """(N, N) CSR of the k nearest neighbours' cosine distances per clip, ascending, self excluded.

    Datalab would build this with a brute-force N x N distance matrix (1.6 GB at 16k clips, measured);
    here the similarities are computed a block of rows at a time, on the GPU when there is one.
    """
    import torch
    from scipy.sparse import csr_matrix

    n = len(emb)
    k = min(k, n - 1)
    x = torch.nn.functional.normalize(torch.as_tensor(emb, dtype=torch.float32, device=device), dim=1)  # (N, D)
    rows = max(1, KNN_BLOCK_BYTES // (4 * n))
    dist, idx = [], []
    for start in range(0, n, rows):
        sim = x[start:start + rows] @ x.T  # (b, N)
        sim[torch.arange(sim.shape[0]), torch.arange(start, start + sim.shape[0])] = -float("inf")  # not itself
        top = sim.topk(k, dim=1)  # sorted, most similar first
        dist.append((1 - top.values).clamp_min(0).cpu())
        idx.append(top.indices.cpu())
    data = torch.cat(dist).double().numpy().ravel()
    indices = torch.cat(idx).numpy().ravel()
    return csr_matrix((data, indices, np.arange(0, n * k + 1, k)), shape=(n, n))


def find_data_issues(emb: np.ndarray, labels: np.ndarray, pred_probs: np.ndarray, sha1: list[str], *,
                     user_order: bool, device: str = "cpu") -> DataIssues:
    import logging
    import warnings

    from cleanlab import Datalab

    multi = labels.ndim == 2
    types = [t for t in (MULTILABEL_TYPES if multi else ISSUE_TYPES) if user_order or t != "non_iid"]
    given = [np.flatnonzero(row).tolist() for row in labels] if multi else labels
    lab = Datalab(data={"label": given}, label_name="label", verbosity=0, task="multilabel" if multi else "classification")
    # Datalab prints notes (e.g. "no meaningful clusters" for small data) to stdout: keep the terminal clean.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("cleanlab").setLevel(logging.ERROR)
        lab.find_issues(features=emb.astype(np.float32), pred_probs=pred_probs,
                        knn_graph=knn_graph(emb, device=device), issue_types={t: {} for t in types})
    summary = lab.get_issue_summary().reset_index(drop=True)
    found = [t for t in types if t in set(summary["issue_type"])]
    cols = [c for t in found for c in (f"is_{t}_issue", f"{t}_score")]
    per_clip = lab.get_issues()[[c for c in cols if c in lab.get_issues().columns]].reset_index(drop=True)
    near_sets = lab.get_issues("near_duplicate")["near_duplicate_sets"] if "near_duplicate" in found else None
    return DataIssues(summary=summary, per_clip=per_clip, duplicate_groups=_duplicate_groups(sha1, near_sets))


def _duplicate_groups(sha1: list[str], near_sets) -> pd.DataFrame:
    """Groups of rows linked by identical bytes or Datalab's near-duplicate sets.

    A group is 'exact' only when all its members hold the same bytes; any near link makes it 'near'.
    """
    parent = list(range(len(sha1)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i, j):
        parent[root(i)] = root(j)

    first: dict[str, int] = {}
    for i, digest in enumerate(sha1):
        if digest:  # "" where unknown (no audio read this run)
            union(i, first.setdefault(digest, i))
    if near_sets is not None:
        for i, others in enumerate(near_sets):
            for j in others:
                union(i, int(j))
    groups: dict[int, list[int]] = {}
    for i in range(len(sha1)):
        groups.setdefault(root(i), []).append(i)
    out, gid = [], 0
    for members in sorted((m for m in groups.values() if len(m) > 1), key=lambda m: m[0]):
        digests = {sha1[i] for i in members}
        kind = "exact" if len(digests) == 1 and "" not in digests else "near"
        out += [(gid, kind, i) for i in members]
        gid += 1
    return pd.DataFrame(out, columns=["group", "kind", "row"])
