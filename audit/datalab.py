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
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from audit.rows import row_blocks

ISSUE_TYPES = ("outlier", "near_duplicate", "non_iid", "class_imbalance", "underperforming_group")
MULTILABEL_TYPES = ("outlier", "near_duplicate", "non_iid")  # what Datalab supports for task="multilabel"
KNN_K = 10  # neighbours per clip: Datalab's own default
KNN_BLOCK_BYTES = 64 * 2**20  # similarity block in memory at once: memory stays flat as N grows
# Exact k-NN on the CPU costs ~1.6e-8 N^2 s on 2 cores (23 s at 40k clips, 163 s at 100k); pynndescent's
# NN-descent ~20 s of numba compiling per process plus ~0.15 s per 1k clips (25 s at 40k, 152 s at 1M,
# 512-d): they cross here (bench/RESULTS.md). A GPU stays exact at any N.
EXACT_KNN_MAX = 40_000
EXACT_KNN_DIM = 512  # ... at this width: wider rows lower the limit so that N^2 D stays the same (11.5k at 6,144-d)
# NN-descent keeps this many candidates per clip and returns the best k. Recall@10 against exact search on
# synthetic 512-d sets: clustered (low intrinsic dimension), 0.995 at 300k with 20 (0.9997 with 30);
# isotropic noise around 50 centres (every direction noise, the hard case), 0.73 at 200k with 20 (0.88
# with 30), for 15-30% less time; a million such clips took 638 s with 30 and older stages, 310 s now
# with 20 (bench/RESULTS.md).
NN_DESCENT_NEIGHBORS = 20
NN_DESCENT_OPTIONS: dict = {}  # more pynndescent settings (bench/bench_knn.py tries them)
NN_DESCENT_SEED = 0  # the same graph, so the same outliers.csv and duplicates.csv, on every run
# Wider embeddings (ECAPA frame features: 6,144-d) are searched in a projection: the unit rows onto their
# top KNN_PROJECT_DIM principal directions (from a sample of KNN_BASIS_ROWS rows), KNN_CANDIDATES per clip
# found there (exact or NN-descent, as above), then re-ranked by their exact cosine distance in the full
# width. Exact search costs N^2 D: 6,144-d made it 12x what it costs at 512-d (bench/RESULTS.md).
KNN_PROJECT_FROM = 1024
KNN_PROJECT_DIM = 256  # recall@10 0.90 at 100k x 6,144-d synthetic clusters (128: 0.78 for 6 s less)
KNN_BASIS_ROWS = 20_000
KNN_CANDIDATES = 30
RERANK_BLOCK_BYTES = 64 * 2**20  # candidate rows gathered at once for the exact re-rank
# Datalab's non-IID test compares the neighbours' index distances with those of P random orders and holds
# P x N x k integers several times over (11.6 GB peak at 1M clips with its default P = 25). P shrinks so
# that P x N x k stays under this (25 up to 200k clips, 5 at 1M); each permutation's statistic pools N x k
# distances, so at large N a few permutations already pin its spread down.
NON_IID_ENTRIES = 50_000_000
NON_IID_MIN_PERMUTATIONS = 5
NON_IID_MAX_PERMUTATIONS = 25  # cleanlab's own default


@dataclass(frozen=True)
class DataIssues:
    summary: pd.DataFrame  # issue_type, score, num_issues (Datalab's summary)
    per_clip: pd.DataFrame  # (N rows) is_<type>_issue, <type>_score for each type found
    duplicate_groups: pd.DataFrame  # group, kind (exact|near), row


def knn_graph(emb: np.ndarray, k: int = KNN_K, device: str = "cpu"):
    """(N, N) CSR of the k nearest neighbours' cosine distances per clip, ascending, self excluded.

    Datalab would build this with a brute-force N x N distance matrix (1.6 GB at 16k clips, measured);
    here nothing N x N is ever held. Up to EXACT_KNN_MAX clips (fewer for wide rows), or on a GPU, the
    search is exact, a block of rows at a time; above it on the CPU, approximate: NN-descent (pynndescent;
    recall measured: see NN_DESCENT_NEIGHBORS), or for wide rows candidates from a projection re-ranked
    exactly (_projected_knn; see KNN_PROJECT_DIM). Either way each row holds k (column, distance) pairs.
    On a GPU the whole (N, D) float32 array is moved to the device (a million 6,144-d rows: 24.6 GB).
    """
    from scipy.sparse import csr_matrix

    n = len(emb)
    k = min(k, n - 1)
    dist, idx = _search(emb, k, device)
    return csr_matrix((dist.ravel(), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))


def _search(emb: np.ndarray, k: int, device: str, project: bool = True):
    """(distances, columns) of the k nearest: exact on a GPU or up to EXACT_KNN_MAX clips (fewer for rows
    wider than EXACT_KNN_DIM); above, a projection for rows wider than KNN_PROJECT_FROM, else NN-descent."""
    import torch

    n, width = emb.shape
    if torch.device(device).type != "cpu" or n <= EXACT_KNN_MAX * min(1.0, (EXACT_KNN_DIM / width) ** 0.5):
        return exact_knn(emb, k, device)
    if project and width > KNN_PROJECT_FROM:
        return _projected_knn(emb, k, device)
    return _nn_descent_knn(emb, k)


def _projected_knn(emb: np.ndarray, k: int, device: str):
    """exact_knn's result for wide rows: candidates from a projection, re-ranked exactly (see KNN_PROJECT_FROM).
    CPU only (_search sends a GPU to exact_knn); `device` is passed on to the candidates' own search."""
    import torch

    from audit.principal import top_components

    n, width = emb.shape
    norms = np.sqrt(sum_of_squares(emb)).clip(1e-12)  # (N,)
    sample = np.sort(np.random.default_rng(NN_DESCENT_SEED).choice(n, min(n, KNN_BASIS_ROWS), replace=False))
    unit = np.asarray(emb[sample], dtype=np.float64)  # (S, D): a copy (indexed), normalized in place
    unit /= norms[sample, None]
    unit = torch.as_tensor(unit)
    basis = top_components(unit, min(KNN_PROJECT_DIM, len(sample) - 1, width),
                           torch.Generator().manual_seed(NN_DESCENT_SEED)).float().numpy()  # (D, P)
    del unit
    projected = np.concatenate([np.asarray(emb[rows], dtype=np.float32) @ basis / norms[rows, None]
                                for rows in row_blocks(n, width, 4, RERANK_BLOCK_BYTES)])  # (N, P)
    _, cand = _search(projected, min(max(KNN_CANDIDATES, k), n - 1), device, project=False)  # (N, C)
    del projected
    with warnings.catch_warnings():  # a read-only memory map (--embeddings FILE.npy): only ever read here
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        x = torch.as_tensor(np.asarray(emb, dtype=np.float32))  # (N, D), not copied when float32 already
    sims = np.empty(cand.shape, dtype=np.float32)  # (N, C) exact cosine similarity
    for rows in row_blocks(n, width * cand.shape[1], 4, RERANK_BLOCK_BYTES):  # b rows' C candidates at once
        c = torch.as_tensor(cand[rows])  # (b, C)
        others = x.index_select(0, c.reshape(-1)).view(*c.shape, width)  # (b, C, D): threaded, unlike numpy's take
        dots = torch.bmm(others, x[rows, :, None])[..., 0].numpy()  # (b, C)
        sims[rows] = dots / (norms[rows, None] * norms[cand[rows]])
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # (N, k)
    idx = np.take_along_axis(cand, order, 1).astype(np.int64)
    dist = (1 - np.take_along_axis(sims, order, 1)).astype(np.float64).clip(0)
    return dist, idx


def sum_of_squares(emb: np.ndarray) -> np.ndarray:
    """(N,) float64 squared norm of each row, a block of rows at a time (a memory map is read once)."""
    return np.concatenate([np.square(np.asarray(emb[rows], dtype=np.float64)).sum(1)
                           for rows in row_blocks(*emb.shape, 8, RERANK_BLOCK_BYTES)])


def exact_knn(emb: np.ndarray, k: int, device: str = "cpu", rows: np.ndarray | None = None):
    """Cosine distances (R, k) float64, ascending, and columns (R, k) int64 of the exact k nearest
    neighbours of `rows` (default: all N), self excluded; similarities a block of rows at a time."""
    import torch

    n = len(emb)
    x = torch.nn.functional.normalize(torch.as_tensor(emb, dtype=torch.float32, device=device), dim=1)  # (N, D)
    rows = torch.arange(n) if rows is None else torch.as_tensor(rows, dtype=torch.int64)  # (R,)
    dist, idx = [], []
    for part in row_blocks(len(rows), n, 4, KNN_BLOCK_BYTES):  # b query rows' (b, N) similarities at once
        q = rows[part].to(device)  # (b,)
        sim = x[q] @ x.T  # (b, N)
        sim[torch.arange(len(q), device=device), q] = -float("inf")  # not itself
        top = sim.topk(k, dim=1)  # sorted, most similar first
        dist.append((1 - top.values).clamp_min(0).cpu())
        idx.append(top.indices.cpu())
    return torch.cat(dist).double().numpy(), torch.cat(idx).numpy()


def _nn_descent_knn(emb: np.ndarray, k: int):
    """exact_knn's result from NN-descent: approximate (recall measured: see NN_DESCENT_NEIGHBORS).

    pynndescent (over faiss-cpu and hnswlib, measured at 100k-1M clips, 512-d, 2 cores) because a self-k-NN
    graph is exactly what NN-descent builds, with no separate query pass: at 1M clustered clips with 30
    candidates 152 s at recall 0.999, where faiss HNSW took 343 s at 0.936 (IVF and PCA-reduced indexes were
    slower or lost recall).
    """
    from pynndescent import NNDescent

    n = len(emb)
    # metric="cosine" works on its own normalized copy of the rows (dot products of unit vectors)
    index = NNDescent(np.ascontiguousarray(emb, dtype=np.float32), metric="cosine",
                      n_neighbors=max(NN_DESCENT_NEIGHBORS, k) + 1, random_state=NN_DESCENT_SEED,
                      **NN_DESCENT_OPTIONS)
    cand, dist = index.neighbor_graph  # (N, C) each, ascending: the clip itself first, -1 where none was found
    del index
    # The first k that are neither the clip (found by id: a duplicate may come first) nor missing.
    valid = (cand >= 0) & (cand != np.arange(n)[:, None])  # (N, C)
    first = np.argsort(~valid, axis=1, kind="stable")[:, :k]  # (N, k): valid columns, in order
    idx = np.take_along_axis(cand, first, 1).astype(np.int64)
    dist = np.take_along_axis(dist, first, 1).astype(np.float64).clip(0)  # 1 - cos, as exact_knn
    # Searched exactly: rows with fewer than k others found, and rows reaching cos <= 0, where pynndescent's
    # distance (from -log2 of the dot product) stops at 1 while exact_knn's goes on to 2.
    redo = np.flatnonzero((valid.sum(1) < k) | (dist[:, -1] >= 1))
    if len(redo):
        dist[redo], idx[redo] = exact_knn(emb, k, rows=redo)
    return dist, idx


def find_data_issues(emb: np.ndarray, labels: np.ndarray, pred_probs: np.ndarray, sha1: list[str], *,
                     user_order: bool, device: str = "cpu") -> DataIssues:
    from cleanlab import Datalab

    multi = labels.ndim == 2
    types = [t for t in (MULTILABEL_TYPES if multi else ISSUE_TYPES) if user_order or t != "non_iid"]
    given = [np.flatnonzero(row).tolist() for row in labels] if multi else labels
    lab = Datalab(data={"label": given}, label_name="label", verbosity=0, task="multilabel" if multi else "classification")
    # Datalab prints notes (e.g. "no meaningful clusters" for small data) to stdout and logs and warns about
    # what it skips: keep the terminal clean for this call only; warning filters and the logger's level are
    # restored afterwards (the caller's, e.g. a notebook's, stay as they were).
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _logger_level("cleanlab", logging.ERROR):
        warnings.simplefilter("ignore")
        # the graph alone: the neighbour-based types (outlier, near_duplicate, non_iid) read it (the same issues
        # as with `features` too, checked on a 3,000-clip set), and Datalab has no (N, D) array to hold or copy
        lab.find_issues(pred_probs=pred_probs, knn_graph=knn_graph(emb, device=device),
                        issue_types={t: _issue_args(t, len(emb)) for t in types})
    summary = lab.get_issue_summary().reset_index(drop=True)
    found = [t for t in types if t in set(summary["issue_type"])]
    cols = [c for t in found for c in (f"is_{t}_issue", f"{t}_score")]
    per_clip = lab.get_issues()[[c for c in cols if c in lab.get_issues().columns]].reset_index(drop=True)
    near_sets = lab.get_issues("near_duplicate")["near_duplicate_sets"] if "near_duplicate" in found else None
    return DataIssues(summary=summary, per_clip=per_clip, duplicate_groups=_duplicate_groups(sha1, near_sets))


@contextlib.contextmanager
def _logger_level(name: str, level: int):
    """`name`'s logger at `level` inside the block, at its own level again after it."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def _issue_args(issue_type: str, n: int) -> dict:
    """Datalab's arguments for one issue type: fewer non-IID permutations as N grows (see NON_IID_ENTRIES)."""
    if issue_type != "non_iid":
        return {}
    return {"num_permutations": int(np.clip(NON_IID_ENTRIES // (n * KNN_K), NON_IID_MIN_PERMUTATIONS,
                                            NON_IID_MAX_PERMUTATIONS))}


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
