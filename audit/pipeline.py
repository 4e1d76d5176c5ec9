"""The whole run as one library call: manifest -> embeddings -> out-of-fold probabilities -> issues.

Notation: N usable clips, C classes, D embedding dim. `run_audit` touches no output files (cli.py
and outputs.py do); it returns a `RunResult` holding every table and array the outputs are made of.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from audit.errors import UserError
from audit.rank import DEFAULT_FILTER_BY


@dataclass(frozen=True)
class RunOptions:
    data: str = "fsdd"
    out: str = "runs/fsdd"
    label_pattern: str | None = None
    encoder: str = "speechbrain/spkrec-xvect-voxceleb"
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    batch_seconds: float | None = None
    num_workers: int | None = None
    cache_dir: str | None = None
    shard_clips: int = 1024
    folds: int = 5
    l2: float | None = None
    seed: int = 0
    rank_by: str = "self_confidence"
    filter_by: str = DEFAULT_FILTER_BY
    progress: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


def natural_key(label: str):
    """'2' < '10', 'a2' < 'a10': labels sort the way people count."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", label)]


@dataclass(frozen=True)
class Embedded:
    clips: pd.DataFrame  # (N rows) path, label, extras: the usable clips, in manifest order
    classes: list  # (C,) class names; class id = position
    labels: np.ndarray  # (N,) given class ids
    emb: np.ndarray  # (N, D)
    skipped: pd.DataFrame  # path, reason
    seconds: dict
    facts: dict
    files: list  # (N,) absolute file of each clip


@dataclass(frozen=True)
class RunResult(Embedded):
    pred_probs: np.ndarray  # (N, C) out-of-fold
    ranking: pd.DataFrame  # rank.rank_issues output, index = row of `clips`
    data_issues: object  # datalab.DataIssues
    map_2d: np.ndarray  # (N, 2) PCA of the standardized embeddings, for the report


def embed_dataset(opts: RunOptions) -> Embedded | None:
    """The first two stages: manifest and embeddings, with every unusable clip set aside.

    Under DDP every rank embeds its share; only rank 0 gets the result, the others None.
    """
    from audit.batching import DEFAULT_BATCH_SECONDS
    from audit.devices import resolve_accelerator
    from audit.embed import EmbedOptions, embed
    from audit.manifest import DEFAULT_LABEL_PATTERN, load_manifest

    accelerator = resolve_accelerator(opts.accelerator)
    seconds = {}
    t = time.perf_counter()
    manifest = load_manifest(opts.data, opts.label_pattern or DEFAULT_LABEL_PATTERN)
    _check_classes(manifest.clips["label"], opts.folds, "in the manifest")
    seconds["manifest"] = time.perf_counter() - t

    embed_opts = EmbedOptions(
        encoder=opts.encoder, cache_dir=Path(opts.cache_dir or Path(opts.out) / "cache"),
        accelerator=accelerator, devices=opts.devices, num_nodes=opts.num_nodes, strategy=opts.strategy,
        precision=opts.precision, batch_seconds=opts.batch_seconds or DEFAULT_BATCH_SECONDS[accelerator],
        num_workers=default_workers() if opts.num_workers is None else opts.num_workers,
        shard_clips=opts.shard_clips, progress=opts.progress)
    embedded = embed(manifest.files, embed_opts)
    if not embedded.is_rank_zero:
        return None
    seconds["embeddings"] = embedded.seconds

    ok = np.array([i not in embedded.failed for i in range(len(manifest.files))], dtype=bool)
    failed = pd.DataFrame([(manifest.clips["path"][i], r) for i, r in embedded.failed.items()],
                          columns=["path", "reason"])
    skipped = pd.concat([manifest.skipped, failed], ignore_index=True)
    clips = manifest.clips[ok].reset_index(drop=True)
    if clips.empty:
        raise UserError(f"no clip could be decoded (first reason: {failed['reason'].iloc[0]})")
    _check_classes(clips["label"], opts.folds, "among the clips that could be decoded")
    classes = sorted(clips["label"].unique(), key=natural_key)
    labels = clips["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)  # (N,)
    from audit.outputs import peak_rss_mb

    facts = dict(accelerator=accelerator, embedding_dim=int(embedded.emb.shape[1]),
                 peak_rss_mb_after_embeddings=peak_rss_mb(),
                 n_embedded_now=embedded.n_computed, n_from_cache=int(len(manifest.files) - embedded.n_computed),
                 manifest_kind=manifest.source, batch_seconds=embed_opts.batch_seconds,
                 num_workers=embed_opts.num_workers, cache_dir=str(embed_opts.cache_dir))
    return Embedded(clips=clips, classes=classes, labels=labels, emb=embedded.emb[ok], skipped=skipped,
                    seconds=seconds, facts=facts, files=[f for f, keep in zip(manifest.files, ok) if keep])


def run_audit(opts: RunOptions) -> RunResult | None:
    """The whole run on rank 0; None on the other ranks of a multi-process embedding stage."""
    from audit import heads, rank
    from audit.datalab import find_data_issues

    data = embed_dataset(opts)
    if data is None:
        return None
    seconds = dict(data.seconds)
    t = time.perf_counter()
    folds = heads.stratified_folds(data.labels, opts.folds, opts.seed)  # (N,)
    pred_probs = heads.out_of_fold_probs(data.emb, data.labels, folds, len(data.classes), seed=opts.seed,
                                         l2=heads.DEFAULT_L2 if opts.l2 is None else opts.l2,
                                         accelerator=data.facts["accelerator"])  # (N, C)
    seconds["heads"] = time.perf_counter() - t
    t = time.perf_counter()
    ranking = rank.rank_issues(data.labels, pred_probs, rank_by=opts.rank_by, filter_by=opts.filter_by)
    seconds["ranking"] = time.perf_counter() - t
    t = time.perf_counter()
    data_issues = find_data_issues(data.emb, data.labels, pred_probs, data.files,
                                   device="cuda" if data.facts["accelerator"] == "gpu" else "cpu")
    seconds["data_issues"] = time.perf_counter() - t
    stages = {f.name: getattr(data, f.name) for f in fields(Embedded)}
    return RunResult(**{**stages, "seconds": seconds}, pred_probs=pred_probs, ranking=ranking,
                     data_issues=data_issues, map_2d=pca_2d(data.emb))


def pca_2d(emb: np.ndarray) -> np.ndarray:
    """(N, 2) coordinates: the first two principal components of the standardized embeddings."""
    x = (emb - emb.mean(0)) / (emb.std(0) + 1e-8)  # (N, D)
    _, _, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    coords = x @ vt[:2].T  # (N, 2)
    return coords * np.sign(vt[:2].sum(1))  # a fixed sign per axis: the map doesn't flip between runs


def default_workers() -> int:
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores - 1))  # leave a core to the encoder's own threads


def _check_classes(labels: pd.Series, n_folds: int, where: str) -> None:
    counts = labels.value_counts()
    if len(counts) < 2:
        raise UserError(f"only one class ({counts.index[0]!r}) {where}: finding label errors needs at least 2")
    small = counts[counts < n_folds]
    if len(small):
        raise UserError(f"class {small.index[0]!r} has {small.iloc[0]} clip(s) {where}, fewer than --folds "
                        f"{n_folds}: add clips, drop the class, or lower --folds")
