"""The embedding cache: shards of (clip key -> embedding (D,) and facts about the file), written atomically.

Notation: n clips in a shard, D embedding dim. The cache folder's name (`cache_folder`) hashes
everything that shapes an embedding besides the clip: the encoder's files (and hub revision), the
precision, and `PIPELINE_VERSION` (decoding, resampling, padding fix, cut rule). A clip's key
hashes its absolute path, size and modification time, so an edited or replaced file is embedded
again. Each shard is an .npz of plain arrays (no pickles) with a SHA-256 over its contents: a
truncated or corrupt shard is moved aside and its clips recomputed. A clip that failed while decoding
for a reason that will not change (NaN or inf samples, a body libsndfile cannot decode) is stored with
it. A clip whose header already rules it out (not audio, empty, too short: batching.probe_all, when a
run is planned) never reaches the cache: it is probed again on every run, a header read. A transient
failure (an I/O error on a network disk) is never stored, so the next run tries again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Bump when decoding, resampling, the padding fix or the cut/window rules change what a clip embeds to.
# Bump too when health.ClipHealth gains a field or changes a measure: the shards keep each clip's health,
# and an old entry would otherwise read as no health (a missing field) or as the old measure.
PIPELINE_VERSION = "4"  # 3: long clips are windowed and pooled, not cut at 60 s; 4: health (DC in the pauses)
STAT_THREADS = 16  # stat() is I/O-bound on network file systems
KEY_DTYPE = "U40"  # sha1 hex digests


def cache_folder(root: Path, encoder_name: str, encoder_identity: str, **settings) -> Path:
    """root/<encoder name>-<digest of the encoder, the settings and PIPELINE_VERSION>."""
    text = "\n".join([f"pipeline={PIPELINE_VERSION}", f"encoder={encoder_identity}"]
                     + [f"{k}={settings[k]}" for k in sorted(settings)])
    return Path(root) / f"{encoder_name}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def clip_keys(files: list[str], offsets=None, durations=None) -> list[str]:
    """One key per clip: its file's absolute path, size and mtime, and the segment when it is one."""
    def key(i):
        f = files[i]
        st = os.stat(f)
        text = f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}"
        if offsets is not None and offsets[i] or durations is not None and durations[i] == durations[i]:
            text += f"\0segment {0 if offsets is None else offsets[i]!r} {durations[i] if durations is not None else ''!r}"
        return hashlib.sha1(text.encode()).hexdigest()

    with ThreadPoolExecutor(STAT_THREADS) as pool:
        return list(pool.map(key, range(len(files))))


@dataclass
class CacheContents:
    emb: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (D,)
    meta: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> {name: value}, e.g. sha1
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason
    steps: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (S, C) float16, tag sets only (steps.py)


class ShardStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def write(self, keys: list[str], emb: np.ndarray, failed: list[tuple[str, str]], tag: str,
              meta: dict[str, list[str]] | None = None, steps: list[np.ndarray] | None = None) -> Path:
        """One shard: keys (n,), emb (n, D) float32, meta {name: (n,) strings}, failed (key, reason) pairs,
        and each clip's steps (S_i, C) when the run has them (stored concatenated, with their counts)."""
        assert len(keys) == len(emb), f"{len(keys)} keys for {len(emb)} embeddings"
        meta = meta or {}
        assert all(len(v) == len(keys) for v in meta.values()), {k: len(v) for k, v in meta.items()}
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays = dict(
            keys=np.array(keys, dtype=KEY_DTYPE),
            emb=np.ascontiguousarray(emb, dtype=np.float32),
            failed_keys=np.array([k for k, _ in failed], dtype=KEY_DTYPE),
            failed_reasons=np.array([r for _, r in failed], dtype=str),
            **{f"meta_{name}": np.array(values, dtype=str) for name, values in sorted(meta.items())},
        )
        if steps is not None:
            assert len(steps) == len(keys), f"{len(keys)} keys for {len(steps)} step arrays"
            arrays["step_counts"] = np.array([len(x) for x in steps], dtype=np.int64)
            arrays["steps"] = np.concatenate(steps).astype(np.float16) if steps else np.zeros((0, 0), np.float16)
        arrays["digest"] = np.array(_digest(arrays))
        path = self.folder / f"shard-{tag}-{uuid.uuid4().hex[:12]}.npz"
        tmp = path.with_suffix(".tmp")  # not shard-*.npz: load() never reads a half-written shard
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:  # a full disk, a kill signal turned exception: leave no partial file behind
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return path

    def load(self) -> CacheContents:
        """Every intact shard's contents; corrupt ones are set aside."""
        out = CacheContents()
        for path in sorted(self.folder.glob("shard-*.npz")):
            arrays = self._read(path)
            if arrays is None:
                continue
            keys = arrays["keys"].tolist()
            out.emb.update(zip(keys, arrays["emb"]))
            names = [n for n in arrays if n.startswith("meta_")]
            for i, key in enumerate(keys):
                out.meta[key] = {n[5:]: str(arrays[n][i]) for n in names}
            out.failed.update(zip(arrays["failed_keys"].tolist(), arrays["failed_reasons"].tolist()))
            if "step_counts" in arrays:
                ends = np.cumsum(arrays["step_counts"])
                out.steps.update((k, arrays["steps"][e - c:e]) for k, c, e in zip(keys, arrays["step_counts"], ends))
        for key in out.emb:  # a clip decoded after an earlier failure (or by another rank) counts as done
            out.failed.pop(key, None)
        return out

    def _read(self, path: Path):
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            ok = (arrays["emb"].ndim == 2 and len(arrays["emb"]) == len(arrays["keys"])
                  and str(arrays["digest"]) == _digest(arrays)
                  and ("step_counts" not in arrays or (len(arrays["step_counts"]) == len(arrays["keys"])
                                                       and arrays["step_counts"].sum() == len(arrays["steps"]))))
        except Exception:
            ok = False
        if ok:
            return arrays
        log.warning("embedding cache: %s is corrupt; its clips will be recomputed", path.name)
        # Another process (a second job on the same cache) may have moved it aside first.
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, path.with_suffix(".corrupt"))
        return None


def _digest(arrays: dict) -> str:
    h = hashlib.sha256()
    names = ["keys", "emb", "failed_keys", "failed_reasons"] + sorted(n for n in arrays if n.startswith("meta_")) \
        + [n for n in ("step_counts", "steps") if n in arrays]
    for name in names:
        h.update(name.encode())
        h.update(str(arrays[name].shape).encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()
