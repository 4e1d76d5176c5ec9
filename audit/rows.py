"""Row blocks: read a wide (N, D) array (a memory map, a tensor) a block of rows at a time, so that no
(N, D) temporary, float64 copy or normalized copy is ever built. Used by every stage that touches all
the rows after the encoder: the heads' moments and projections, the k-NN graph, the 2-D map, the
finiteness check of --embeddings."""

from __future__ import annotations

BLOCK_BYTES = 1 << 27  # 128 MiB of one block's working copy: 5,461 rows of 6,144-d float32 -> float64


def row_blocks(n: int, dim: int, itemsize: int = 8, block_bytes: int | None = None, max_rows: int | None = None):
    """Consecutive slices covering rows 0 .. n - 1, each holding at most `block_bytes` (default BLOCK_BYTES)
    of `dim` columns at `itemsize` bytes a value (the copy the caller makes of them), and at most `max_rows`."""
    step = max(1, (BLOCK_BYTES if block_bytes is None else block_bytes) // (itemsize * max(1, dim)))
    if max_rows is not None:
        step = min(step, max_rows)
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))
