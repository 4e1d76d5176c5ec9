"""--embeddings FILE: audit with embeddings computed elsewhere (CLAP, BEATs, a fine-tuned model, audit's own).

Notation: N manifest rows, D embedding dim. Two layouts:
    .npy      (N, D): row i is the manifest's row i (a folder's rows are its sorted files)
    .parquet  a `path` column and one embedding column (a list per row; `embedding` if several):
              rows are matched to the manifest by path, as written there or as an absolute file.
Every run writes OUT/embeddings.parquet in the second layout, so a run's embeddings can be reused.
Audio files need not exist: what needs audio (health checks, hashes, players) is left out.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from audit.embed import CachedEmbeddings
from audit.errors import UserError, one_line
from audit.rows import row_blocks

EMBEDDING_COLUMN = "embedding"


def load(source: str, paths: list[str], files: list[str]) -> CachedEmbeddings:
    """Embeddings (N, D) for the manifest rows (`paths` as written, `files` absolute); rows without one fail."""
    start = time.perf_counter()
    path = Path(source)
    if not path.is_file():
        raise UserError(f"--embeddings {source}: no such file")
    if path.suffix.lower() == ".npy":
        emb = _npy(path, len(paths))
    elif path.suffix.lower() in (".parquet", ".pq"):
        emb = _parquet(path, paths, files)
    else:
        raise UserError(f"--embeddings {source}: a .npy (N, D) array or a .parquet table with path and embedding")
    finite = np.concatenate([np.isfinite(emb[rows]).all(1) for rows in row_blocks(*emb.shape, itemsize=4)])  # (N,)
    failed = {i: "no embedding in --embeddings" if np.isnan(emb[i]).all() else "non-finite embedding"
              for i in np.flatnonzero(~finite)}
    return CachedEmbeddings(emb=emb, meta=[{} for _ in paths], failed=failed, n_computed=0,
                            seconds=time.perf_counter() - start)


def write(path: Path, files: list[str], emb: np.ndarray) -> None:
    """OUT/embeddings.parquet: absolute file and embedding (a fixed-size list) per clip."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    emb = np.ascontiguousarray(emb, dtype=np.float32)  # (N, D)
    column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])
    table = pa.table({"path": pa.array(files, pa.string()), EMBEDDING_COLUMN: column})
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _npy(path: Path, n: int) -> np.ndarray:
    try:
        emb = np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as e:
        raise UserError(f"--embeddings {path}: cannot read it ({one_line(e, 200)})") from None
    if emb.ndim != 2 or len(emb) != n:
        raise UserError(f"--embeddings {path}: shape {emb.shape}, expected ({n}, D): one row per manifest row, "
                        "in manifest order")
    return np.asarray(emb, dtype=np.float32)


def _parquet(path: Path, paths: list[str], files: list[str]) -> np.ndarray:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:
        raise UserError(f"--embeddings {path}: cannot read it ({one_line(e, 200)})") from None
    lists = [f.name for f in table.schema if str(f.type).startswith(("list", "fixed_size_list", "large_list"))]
    column = EMBEDDING_COLUMN if EMBEDDING_COLUMN in lists else (lists[0] if len(lists) == 1 else None)
    if "path" not in table.column_names or column is None:
        raise UserError(f"--embeddings {path}: needs a `path` column and one embedding column (a list per row; "
                        f"name it `{EMBEDDING_COLUMN}` if there are several); it has {', '.join(table.column_names)}")
    values = table.column(column).combine_chunks()
    flat = np.asarray(values.flatten(), dtype=np.float32)
    dim = len(flat) // max(1, len(values))
    if dim * len(values) != len(flat):
        raise UserError(f"--embeddings {path}: rows of different lengths in `{column}`")
    given = flat.reshape(len(values), dim)  # (M, D)
    where = {p: i for i, p in enumerate(table.column("path").to_pylist())}
    out = np.full((len(paths), dim), np.nan, dtype=np.float32)  # (N, D)
    for row, (shown, file) in enumerate(zip(paths, files)):
        i = where.get(shown, where.get(file))
        if i is not None:
            out[row] = given[i]
    if np.isnan(out).all():
        raise UserError(f"--embeddings {path}: no `path` matches the manifest (first: {next(iter(where), '')!r} vs "
                        f"{paths[0]!r})")
    return out
