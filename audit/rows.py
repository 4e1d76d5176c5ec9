"""Row blocks: read a wide (N, D) array (a memory map, a tensor) a block of rows at a time, so that the
reader's float64 or normalized working copy is one block, not (N, D). Its readers: the heads' per-fold
moments and projections, the k-NN projection's norms, projected rows and exact re-rank, exact k-NN's
query blocks, the 2-D map's projection, the finiteness check of --embeddings. (What still holds (N, D): see each stage's docstring: the heads' float64
input up to 50k clips, exact k-NN's normalized rows up to its limit, pynndescent's own copy.)"""

from __future__ import annotations

BLOCK_BYTES = 1 << 27  # 128 MiB of one block's working copy: 2,730 rows of 6,144-d float64


def row_blocks(n: int, dim: int, itemsize: int = 8, block_bytes: int | None = None, max_rows: int | None = None):
    """Consecutive slices covering rows 0 .. n - 1, each holding at most `block_bytes` (default BLOCK_BYTES)
    of `dim` columns at `itemsize` bytes a value (the copy the caller makes of them), and at most `max_rows`."""
    step = max(1, (BLOCK_BYTES if block_bytes is None else block_bytes) // (itemsize * max(1, dim)))
    if max_rows is not None:
        step = min(step, max_rows)
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))
