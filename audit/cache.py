"""The embedding cache: shards of (clip key -> embedding (D,)) per encoder, written atomically.

A clip's key hashes its absolute path, size and modification time, so an edited or replaced file
is embedded again. Each shard is an .npz of plain arrays (no pickles) with a SHA-256 over its
contents: a truncated or corrupt shard is detected, moved aside and its clips recomputed. Clips
that could not be decoded are stored with their reason, so a rerun does not decode them again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def clip_keys(files: list[str]) -> list[str]:
    def key(f):
        st = os.stat(f)
        return hashlib.sha1(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()

    with ThreadPoolExecutor(16) as pool:  # stat() is I/O-bound on network file systems
        return list(pool.map(key, files))


class ShardStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def write(self, keys: list[str], emb: np.ndarray, failed: list[tuple[str, str]], tag: str) -> Path:
        """One shard: keys (n,), emb (n, D) float32, failed (key, reason) pairs. Atomic (temp + rename)."""
        assert len(keys) == len(emb), f"{len(keys)} keys for {len(emb)} embeddings"
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays = dict(
            keys=np.array(keys, dtype="U40"),
            emb=np.ascontiguousarray(emb, dtype=np.float32),
            failed_keys=np.array([k for k, _ in failed], dtype="U40"),
            failed_reasons=np.array([r for _, r in failed], dtype=str),
        )
        arrays["digest"] = np.array(_digest(arrays))
        path = self.folder / f"shard-{tag}-{uuid.uuid4().hex[:12]}.npz"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def load(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """({key: embedding (D,)}, {key: reason}) from every intact shard; corrupt ones are set aside."""
        emb, failed = {}, {}
        for path in sorted(self.folder.glob("shard-*.npz")):
            arrays = self._read(path)
            if arrays is None:
                continue
            emb.update(zip(arrays["keys"].tolist(), arrays["emb"]))
            failed.update(zip(arrays["failed_keys"].tolist(), arrays["failed_reasons"].tolist()))
        for key in emb:  # a clip decoded after an earlier failure (or by another rank) counts as done
            failed.pop(key, None)
        return emb, failed

    def _read(self, path: Path):
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("keys", "emb", "failed_keys", "failed_reasons", "digest")}
            ok = (arrays["emb"].ndim == 2 and len(arrays["emb"]) == len(arrays["keys"])
                  and str(arrays["digest"]) == _digest(arrays))
        except Exception:
            ok = False
        if ok:
            return arrays
        log.warning("embedding cache: %s is corrupt; its clips will be recomputed", path.name)
        os.replace(path, path.with_suffix(".corrupt"))
        return None


def _digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for name in ("keys", "emb", "failed_keys", "failed_reasons"):
        h.update(name.encode())
        h.update(str(arrays[name].shape).encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()
