"""The whole run as one library call: manifest -> embeddings -> out-of-fold probabilities -> issues.

Notation: N usable clips, K classes, D embedding dim. `run_audit` touches no output files (api.py
and outputs.py do); it returns an `AuditResult` holding every table and array the outputs are made of.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from audit import health
from audit.errors import UserError
from audit.options import AUTO, RunOptions, fold_repeats_for
from audit.rows import row_blocks

if TYPE_CHECKING:
    from audit.steps import Steps


@dataclass(frozen=True)
class EmbeddedClips:
    """The first two stages: the usable clips, their labels and embeddings."""

    clips: pd.DataFrame  # (N rows) path, label, extras: the usable clips, in manifest order
    files: list  # (N,) absolute file of each clip
    sha1: list  # (N,) SHA-1 of each file's bytes
    health: list  # (N,) health.ClipHealth of each clip (None where the cache holds none)
    classes: list  # (K,) class names; class id = position
    labels: np.ndarray  # (N,) given class ids, or (N, K) multi-hot tag sets (--multi-label)
    emb: np.ndarray  # (N, D)
    skipped: pd.DataFrame  # path, reason
    seconds: dict
    facts: dict
    user_order: bool  # rows keep an order the user gave (a table manifest), so order-based checks mean something
    steps: Steps | None = None  # the N clips' steps (tag sets; the first encoder, when SpeechBrain), else None

    @property
    def multi_label(self) -> bool:
        return self.labels.ndim == 2


@dataclass(frozen=True)
class AuditResult:
    data: EmbeddedClips
    pred_probs: np.ndarray  # (N, K) out-of-fold
    issues: object  # label_issues.LabelIssues
    data_issues: object  # datalab.DataIssues
    map_2d: np.ndarray  # (N, 2) PCA of the standardized embeddings, for the report
    audio_issues: pd.DataFrame  # row, type, value, threshold: audio-health problems (health.py)
    audio_notes: list  # health.dataset_notes: problems most clips share, reported once, not in audio_issues
    seconds: dict  # the stages after the embeddings


def embed_dataset(opts: RunOptions) -> EmbeddedClips | None:
    """Manifest and embeddings, with every unusable clip set aside. `opts` resolved (RunOptions.resolve).

    Under DDP every rank embeds its share; only rank 0 gets the result, the others None.
    """
    from audit import labels as lab
    from audit.manifest import DEFAULT_LABEL_PATTERN, load_manifest
    from audit.choose import as_records
    from audit.summary import peak_rss_mb

    assert opts.accelerator in ("cpu", "gpu") and opts.batch_seconds, "options must be resolved first"
    seconds, choice = {}, None  # choice: --encoder auto's table (choose.py)
    t = time.perf_counter()
    manifest = load_manifest(opts.data, opts.label_pattern or DEFAULT_LABEL_PATTERN, need_files=not opts.embeddings,
                             label_column=opts.label_column, cache_dir=opts.cache_dir, multi_label=opts.multi_label)
    lab.check_counts(lab.encode(manifest.clips["label"], opts.multi_label), opts.folds, "in the manifest")
    seconds["manifest"] = time.perf_counter() - t

    if opts.embeddings:
        from audit import precomputed

        embedded = precomputed.load(opts.embeddings, manifest.clips["path"].tolist(), manifest.files)
    else:
        if opts.encoder == AUTO:  # chosen on a sample first; the sample's embeddings are then in the cache
            t = time.perf_counter()
            opts, choice = choose_encoder(opts, manifest)
            seconds["choose_encoder"] = time.perf_counter() - t
        embedded = _embed_all(manifest, opts)
    if not embedded.is_rank_zero:
        return None
    seconds["encoder_load"] = embedded.load_seconds  # with its padding check
    seconds["embeddings"] = embedded.seconds - embedded.load_seconds

    ok = np.array([i not in embedded.failed for i in range(len(manifest.files))], dtype=bool)
    failed = pd.DataFrame([(manifest.clips["path"][i], r) for i, r in embedded.failed.items()],
                          columns=["path", "reason"])
    skipped = pd.concat([manifest.skipped, failed], ignore_index=True)
    clips = manifest.clips[ok].reset_index(drop=True)
    if clips.empty:
        raise UserError(f"no clip could be decoded (first reason: {failed['reason'].iloc[0]})")
    labels = lab.encode(clips["label"], opts.multi_label)  # target (N,) class ids or (N, K) multi-hot
    lab.check_counts(labels, opts.folds, "among the clips that could be decoded")
    import torch

    facts = dict(accelerator=opts.accelerator, embedding_dim=int(embedded.emb.shape[1]),
                 peak_gpu_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else 0.0,
                 peak_rss_mb_after_embeddings=peak_rss_mb(),
                 n_embedded_now=embedded.n_computed,
                 n_from_cache=0 if opts.embeddings else int(ok.sum()) - min(int(ok.sum()), embedded.n_computed),
                 manifest_kind=manifest.source, batch_seconds=opts.batch_seconds,
                 **({} if opts.embeddings or choice is None else
                    {"encoder_chosen": opts.encoder, "encoder_choice": as_records(choice)}),
                 num_workers=opts.num_workers, cache_dir=str(opts.cache_dir),
                 **({"step_heads": embedded.steps is not None} if opts.multi_label else {}),
                 **({"note": f"embeddings from {opts.embeddings}: no encoder ran, no audio was read (no audio-health "
                             "checks, byte-identical duplicates or players)"} if opts.embeddings else {}))
    keep = np.flatnonzero(ok)
    meta = [embedded.meta[i] for i in keep]
    return EmbeddedClips(clips=clips, files=[manifest.files[i] for i in keep], sha1=[m.get("sha1", "") for m in meta],
                         health=[health.from_meta(m) for m in meta],
                         classes=labels.classes, labels=labels.target, emb=embedded.emb if ok.all() else embedded.emb[ok],
                         skipped=skipped, seconds=seconds, facts=facts, user_order=manifest.source == "table",
                         steps=None if embedded.steps is None else embedded.steps if ok.all() else embedded.steps.subset(keep))


def choose_encoder(opts: RunOptions, manifest=None) -> tuple[RunOptions, pd.DataFrame]:
    """--encoder auto: (opts naming the encoder choose.py picks on a sample of the clips, its table).
    Every rank of a multi-process run computes the same choice. `manifest`: loaded here if not given."""
    from audit import labels as lab
    from audit.choose import choose
    from audit.manifest import DEFAULT_LABEL_PATTERN, load_manifest

    if manifest is None:
        manifest = load_manifest(opts.data, opts.label_pattern or DEFAULT_LABEL_PATTERN, label_column=opts.label_column,
                                 cache_dir=opts.cache_dir, multi_label=opts.multi_label)
    winner, choice = choose(manifest, lab.encode(manifest.clips["label"], opts.multi_label).target, opts)
    return replace(opts, encoder=winner, candidates=None), choice


def _embed_all(manifest, opts: RunOptions):
    """Every encoder embeds every clip (each with its own cache); their features are concatenated."""
    from audit import encoders
    from audit.embed import embed

    if len(opts.encoders) == 1:
        return embed(manifest.files, opts, manifest.offsets, manifest.durations)
    resolved = [encoders.resolve(e) for e in opts.encoders]
    own = encoders.options_for(resolved, opts)  # each encoder gets the options its family takes
    # steps (tag sets) come from the first encoder alone: the others skip computing and caching them
    later = {"step_heads": False} if opts.multi_label else {}
    parts = [embed(manifest.files, replace(o, encoder=e.spec, **(later if i else {})), manifest.offsets,
                   manifest.durations, encoder=e) for i, (e, o) in enumerate(zip(resolved, own))]
    if not parts[0].is_rank_zero:
        return parts[0]
    failed = {}
    for p in parts:  # a clip any encoder could not use is left out, with the first reason
        for row, reason in p.failed.items():
            failed.setdefault(row, reason)
    return replace(parts[0], emb=np.concatenate([p.emb for p in parts], axis=1), failed=dict(sorted(failed.items())),
                   n_computed=max(p.n_computed for p in parts), seconds=sum(p.seconds for p in parts),
                   load_seconds=sum(p.load_seconds for p in parts))


def run_audit(opts: RunOptions) -> AuditResult | None:
    """The whole run on rank 0; None on the other ranks of a multi-process embedding stage."""
    from audit.datalab import find_data_issues
    from audit.label_issues import find_label_issues

    data = embed_dataset(opts)
    if data is None:
        return None
    seconds = {}
    t = time.perf_counter()
    pred_probs = repeated_out_of_fold(data.emb, data.labels, len(data.classes), data.steps, n_folds=opts.folds,
                                      fold_repeats=opts.fold_repeats, l2=opts.l2, pca_dim=opts.pca_dim,
                                      calibration=opts.calibration, seed=opts.seed,
                                      accelerator=opts.accelerator)  # (N, K)
    seconds["heads"] = time.perf_counter() - t
    t = time.perf_counter()
    issues = find_label_issues(data.labels, pred_probs, rank_by=opts.rank_by, filter_by=opts.filter_by, seed=opts.seed)
    seconds["ranking"] = time.perf_counter() - t
    t = time.perf_counter()
    data_issues = find_data_issues(data.emb, data.labels, pred_probs, data.sha1, user_order=data.user_order,
                                   device="cuda" if opts.accelerator == "gpu" else "cpu")
    seconds["data_issues"] = time.perf_counter() - t
    t = time.perf_counter()
    healths = {i: h for i, h in enumerate(data.health) if h is not None}
    audio_notes = health.dataset_notes([healths[r] for r in sorted(healths)])
    audio_issues = health.issue_table(healths, audio_notes)  # the notes' types are left out of its rows
    map_2d = pca_2d(data.emb)  # (N, 2)
    seconds["map_2d"] = time.perf_counter() - t
    return AuditResult(data=data, pred_probs=pred_probs, issues=issues, data_issues=data_issues,
                       map_2d=map_2d, audio_issues=audio_issues, audio_notes=audio_notes,
                       seconds=seconds)


def repeated_out_of_fold(emb: np.ndarray, labels: np.ndarray, n_classes: int, steps=None, *, n_folds: int,
                         fold_repeats: int | str, seed: int, **fit) -> np.ndarray:
    """The mean of R out_of_fold probabilities (N, K), R = fold_repeats_for(`fold_repeats`, ...), each over its
    own stratified split of `n_folds` (split j seeded seed + FOLD_SEED_STEP x j: split 0 is the one split a
    run made before): every clip is scored by R heads that never saw it, which steadies the ranking where the
    heads are weak (options.FOLD_REPEATS_AUTO; bench/RESULTS.md)."""
    from audit.folds import fold_ids

    repeats = fold_repeats_for(fold_repeats, len(labels), labels.ndim == 2)
    total = None
    for j in range(repeats):
        split_seed = seed + FOLD_SEED_STEP * j
        probs = out_of_fold(emb, labels, fold_ids(labels, n_folds, split_seed), n_classes, steps, seed=split_seed,
                            **fit)
        total = probs if total is None else total + probs
    return total / repeats


def out_of_fold(emb: np.ndarray, labels: np.ndarray, folds: np.ndarray, n_classes: int, steps=None, *, l2, pca_dim,
                calibration: str, seed: int, accelerator: str) -> np.ndarray:
    """The out-of-fold probabilities (N, K) a run ranks: the linear heads', calibrated per fold (calibration.py);
    tag sets with `steps`: the clip-statistics heads and the step heads together (instance_heads.py)."""
    from audit import calibration as cal
    from audit import heads

    probs = heads.out_of_fold_probs(emb, labels, folds, n_classes, seed=seed, l2=l2, pca_dim=pca_dim,
                                    accelerator=accelerator, held_out=calibration != "none")
    if calibration != "none":
        probs, held = probs
        probs = cal.calibrate(probs, labels, folds, held, calibration)
    if steps is not None:
        from audit import instance_heads

        probs = instance_heads.with_step_heads(probs, steps, labels, folds, seed=seed, pca_dim=pca_dim,
                                               accelerator=accelerator)
    return probs


FOLD_SEED_STEP = 1000  # repeated_out_of_fold: split j's seed is the run's + this x j
MAP_BLOCK = 8  # subspace-iteration vectors for the top 2: a gap of 6 directions makes it converge fast
MAP_ITERATIONS = 12  # passes over the rows; the map's axes move by < 1e-3 after ~8 on FSDD frame features
MAP_SAMPLE_ROWS = 10_000  # the axes are fitted on at most this many rows (seeded); every row is then projected


def pca_2d(emb: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 2) coordinates: the first two principal components of the standardized embeddings.

    The axes: block subspace iteration (the map needs two directions, not all D: a full (D, D) eigh
    took 109 s at D = 6,144 on 2 cores) on at most MAP_SAMPLE_ROWS rows, a seeded sample above that
    (the map is for the eye; 14 passes over 100k x 6,144-d rows took 138 s). Every row is then read
    once, in chunks, to be projected: nothing (N, D) is built.
    """
    n, dim = emb.shape
    sample = np.sort(np.random.default_rng([seed, 1]).choice(n, MAP_SAMPLE_ROWS, replace=False)) \
        if n > MAP_SAMPLE_ROWS else slice(None)
    fit = np.asarray(emb[sample], dtype=np.float64)  # (S, D), standardized in place below: never the caller's
    if np.may_share_memory(fit, emb):
        fit = fit.copy()
    mean = fit.mean(0)  # (D,)
    std = fit.std(0) + 1e-8  # (D,)
    fit -= mean
    fit /= std  # standardized, in place
    block = min(MAP_BLOCK, dim)
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, block)))  # (D, M)
    for _ in range(MAP_ITERATIONS):
        q, _ = np.linalg.qr(fit.T @ (fit @ q))
    values, vectors = np.linalg.eigh(q.T @ (fit.T @ (fit @ q)))  # (M,), (M, M): Rayleigh-Ritz, ascending
    del fit
    top = q @ vectors[:, ::-1][:, :2]  # (D, 2) the top two directions of the standardized rows
    top = top * np.sign(top.sum(0) + 1e-300)  # a fixed sign per axis: the map doesn't flip between runs
    if top.shape[1] < 2:  # one-dimensional embeddings: a flat second axis
        top = np.concatenate([top, np.zeros((dim, 1))], axis=1)
    axes = top / std[:, None]  # (D, 2) read on the raw rows
    return np.concatenate([(np.asarray(emb[rows], dtype=np.float64) - mean) @ axes for rows in row_blocks(n, dim)])
