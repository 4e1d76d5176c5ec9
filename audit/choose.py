"""`--encoder auto`: the encoder chosen on the user's own data, by measurement.

Notation: N clips, n the sample's clips, K classes (or tags), D a candidate's feature dim.

Which encoder understands a dataset matters more than any head (a speaker encoder's frames on spoken
words, an AudioSet CNN on sound events), and nothing about a folder of clips says which it is. So each
candidate embeds the same seeded sample (stratified by class, at most SAMPLE_CLIPS), the heads are
cross-validated on it exactly as in the real run, and the out-of-fold log-loss decides; candidates within
TIE_RELATIVE of the best count as tied and the one listed first among them wins (the list puts the
cheaper encoder first: the x-vector, then EfficientAT mn04; a measured time would differ between ranks
and reruns, so the choice would too). Every step is deterministic, so every rank of a multi-process run
(each reads the sample back from the cache) and a requeued job pick the same encoder. The run uses the
options the trial used, so the sample's embeddings in each candidate's cache are reused by the winner.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd

from audit.errors import UserError
from audit.options import AUTO_CANDIDATES, RunOptions

SAMPLE_CLIPS = 1000  # per candidate: ~1 min of ECAPA on 2 CPU cores, seconds on a GPU
TIE_RELATIVE = 0.02  # log-losses within 2% of the best are a tie: then the cheaper encoder wins
LOG_FLOOR = 1e-6  # probabilities are clipped here before the log


def sample_rows(labels: np.ndarray, n_max: int, n_folds: int, seed: int) -> np.ndarray:
    """Sorted rows of a seeded sample of at most ~n_max clips: every class keeps its share, and at least
    n_folds clips where it has them (so the folds stay stratified); tag sets: a plain random sample."""
    n = len(labels)
    if n <= n_max:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if labels.ndim == 2:
        return np.sort(rng.choice(n, n_max, replace=False))
    rows = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)  # (n_c,)
        take = min(len(members), max(n_folds, round(n_max * len(members) / n)))
        rows.append(rng.choice(members, take, replace=False))
    return np.sort(np.concatenate(rows))


def log_loss(pred_probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the given labels (class ids (n,); tag sets (n, K): mean binary)."""
    p = np.clip(pred_probs, LOG_FLOOR, 1 - LOG_FLOOR)
    if labels.ndim == 2:
        return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())
    return float(-np.log(p[np.arange(len(labels)), labels]).mean())


def candidates(opts: RunOptions) -> tuple:
    """The encoders `auto` compares: the user's --candidates, else AUTO_CANDIDATES."""
    return tuple(opts.candidates) if opts.candidates else AUTO_CANDIDATES


def choose(manifest, labels: np.ndarray, opts: RunOptions) -> tuple[str, pd.DataFrame]:
    """(the winning encoder's spec, the table: encoder, n_clips, cv_accuracy, log_loss, seconds_per_clip, chosen).

    `labels`: the manifest's class ids (N,) or tag sets (N, K); `opts` resolved. Runs on every rank of a
    multi-process run (each reads the sample's embeddings back from the cache), so all agree on the winner.
    """
    from audit import encoders, heads
    from audit.embed import embed
    from audit.folds import fold_ids

    rows = sample_rows(labels, SAMPLE_CLIPS, opts.folds, opts.seed)  # (n,)
    files = [manifest.files[i] for i in rows]
    segments = {k: None if v is None else [v[i] for i in rows]
                for k, v in (("offsets", manifest.offsets), ("durations", manifest.durations))}
    table = []
    for spec in candidates(opts):
        encoder = encoders.resolve(spec)
        trial = replace(opts, encoder=spec, candidates=None)  # what the run will use if it wins (same cache)
        start = time.perf_counter()
        got = embed(files, trial, encoder=encoder, every_rank=True, **segments)
        ok = np.array([i not in got.failed for i in range(len(rows))], dtype=bool)  # (n,)
        y = labels[rows][ok]
        if len(y) < opts.folds or (y.ndim == 1 and np.bincount(y).max() < 2):
            first = next(iter(got.failed.values()), "")
            raise UserError(f"--encoder auto: {spec} could use only {len(y)} of the {len(rows)} sampled clips "
                            f"(first reason: {first}); too few to compare encoders")
        folds = fold_ids(y, opts.folds, opts.seed)  # (n_ok,)
        probs = heads.out_of_fold_probs(got.emb[ok], y, folds, labels.shape[1] if labels.ndim == 2 else
                                        int(labels.max()) + 1, l2=opts.l2, pca_dim=opts.pca_dim,
                                        accelerator=opts.accelerator, seed=opts.seed)  # (n_ok, K)
        correct = (probs >= 0.5) == y.astype(bool) if y.ndim == 2 else probs.argmax(1) == y
        per_clip = round((got.seconds - got.load_seconds) / got.n_computed, 5) if got.n_computed else None  # cached
        table.append(dict(encoder=spec, n_clips=int(ok.sum()), cv_accuracy=float(correct.mean()),
                          log_loss=log_loss(probs, y), seconds_per_clip=per_clip,
                          seconds=time.perf_counter() - start))
    best = min(row["log_loss"] for row in table)
    winner = next(row["encoder"] for row in table if row["log_loss"] <= best * (1 + TIE_RELATIVE))  # first listed
    for row in table:
        row["chosen"] = row["encoder"] == winner
    return winner, pd.DataFrame(table)


def as_records(table: pd.DataFrame) -> list[dict]:
    """The table for summary.json and eval.json: rounded, and a cached candidate's unknown cost None (not NaN)."""
    rounded = table.round(4).astype(object)
    return rounded.where(table.notna(), None).to_dict("records")
