"""`audit evaluate`: how often audit is right, measured on labels flipped on purpose.

Notation: N clips, C classes, R repeats. The manifest's labels are taken as truth; each repeat flips
a fraction `noise` of them (seeded), runs the heads and the ranking on the noisy labels (the
embeddings are computed once), and scores the flagged set and the quality ranking against the
flips. `noise_kind`:
  uniform     a flipped clip gets any other class, uniformly,
  confusable  it gets a class drawn from the confusions the model already makes on clean labels
              (row c of the out-of-fold confusion matrix, without c): the harder, realistic case.
The reference baseline is the recipe audit replaces: sklearn LogisticRegression(C=0.01) with 5-fold
cross_val_predict, cleanlab's find_label_issues ranked by self-confidence, fitted as it was published
on the same encoder's final embedding (`--features embedding`: `reference_options`), not on audit's
frame features; with --embeddings FILE both use that file's embeddings.

Multi-label (`labels` (N, K) multi-hot): a fraction `noise` of the clips get one tag corrupted,
half of them by dropping one of their tags (the commonest defect: a missing tag), half by swapping
one for a tag they lack; the tags uniformly (`uniform`) or (`confusable`) the one dropped drawn by how
much the heads doubt it on that clip (1 - p, out of fold on the clean tags) and the one added by how
much they hear it (p). The reference is one-vs-rest LogisticRegression(C=0.01) with cleanlab's
multi-label ranking.
"""

from __future__ import annotations

import numpy as np

from audit.errors import UserError
from audit.label_issues import find_label_issues
from audit.options import AUTO, NOISE_KINDS, RunOptions

# best_cut_f1: the F1 of the best top-k of audit's own ranking, beside the flagged set's F1: the gap is
# how far the flagged set's size is off; n_flagged against n_flips says which way (issue: cut the ranking);
# n_estimated: the estimated number of wrong labels (issue_count.py, unrounded; n_flagged where no estimate is
# made: cleanlab's filters, the reference)
METRICS = ("precision", "recall", "f1", "best_cut_f1", "ap", "auroc", "precision_at_k", "n_flagged", "n_estimated",
           "n_flips")
REFERENCE_FEATURES = "embedding"  # the recipe as published used the speaker encoder's final embedding


def flip_labels(labels: np.ndarray, n_classes: int, noise: float, kind: str, rng: np.random.Generator,
                confusion: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels (N,), flipped (N,) bool). `confusion` (C, C) is needed for kind='confusable'."""
    n_flip = int(round(noise * len(labels)))
    rows = rng.choice(len(labels), size=n_flip, replace=False)
    noisy = labels.copy()
    for i in rows:
        c = labels[i]
        if kind == "uniform":
            weights = np.ones(n_classes)
        else:
            weights = confusion[c].copy() + 1e-9  # + a floor: every other class stays possible
        weights[c] = 0
        noisy[i] = rng.choice(n_classes, p=weights / weights.sum())
    flipped = noisy != labels
    return noisy, flipped


def corrupt_tags(labels: np.ndarray, noise: float, rng: np.random.Generator,
                 clean_probs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(noisy multi-hot (N, K), corrupted (N,) bool): drop one given tag or swap one for an absent tag.
    `clean_probs` (N, K) (confusable): the tag dropped drawn by 1 - p, the tag added by p (+ a floor)."""
    n_corrupt = int(round(noise * len(labels)))
    noisy = labels.copy()

    def pick(tags, weights):
        return rng.choice(tags) if clean_probs is None else rng.choice(tags, p=weights / weights.sum())

    for i in rng.choice(len(labels), size=n_corrupt, replace=False):
        have, lack = np.flatnonzero(labels[i]), np.flatnonzero(labels[i] == 0)
        drop = len(have) and (not len(lack) or rng.random() < 0.5)
        p = None if clean_probs is None else clean_probs[i].astype(np.float64)
        if len(have):
            noisy[i, pick(have, None if p is None else 1 - p[have] + 1e-9)] = 0  # a missing tag...
        if not drop:  # ...or a wrong one in its place (just an extra one for a clip without tags)
            noisy[i, pick(lack, None if p is None else p[lack] + 1e-9)] = 1
    return noisy, (noisy != labels).any(1)


def score(flipped: np.ndarray, flagged: np.ndarray, quality: np.ndarray, estimated: float | None = None) -> dict:
    """Precision/recall/F1 of the flagged set, AP/AUROC of the quality score, precision at k = #flips;
    `estimated`: the estimated number of wrong labels, where the method makes one (else the flagged count)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    tp = int((flipped & flagged).sum())
    precision = tp / max(1, int(flagged.sum()))
    recall = tp / max(1, int(flipped.sum()))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    k = int(flipped.sum())
    order = np.lexsort((np.arange(len(quality)), quality))  # most likely error first
    top_k = order[:k]
    hits = np.cumsum(flipped[order])  # (N,) true flips among the top 1..N
    best_cut = float((2 * hits / (np.arange(1, len(order) + 1) + k)).max()) if k else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "best_cut_f1": best_cut,
            "n_flagged": float(flagged.sum()), "n_estimated": float(flagged.sum() if estimated is None else estimated),
            "n_flips": float(k),
            "ap": float(average_precision_score(flipped, -quality)),
            "auroc": float(roc_auc_score(flipped, -quality)),
            "precision_at_k": float(flipped[top_k].mean()) if k else 0.0}


def audit_method(emb, noisy, n_classes, *, folds, fold_repeats, seed, l2, pca_dim, rank_by, filter_by, calibration,
                 accelerator, steps=None):
    """As a run (pipeline.run_audit): the same heads, fold splits, calibration and rule, on the noisy labels."""
    from audit.pipeline import repeated_out_of_fold

    probs = repeated_out_of_fold(emb, noisy, n_classes, steps, n_folds=folds, fold_repeats=fold_repeats, l2=l2,
                                 pca_dim=pca_dim, calibration=calibration, seed=seed, accelerator=accelerator)
    issues = find_label_issues(noisy, probs, rank_by=rank_by, filter_by=filter_by, seed=seed)
    return issues.flagged, issues.quality, probs, None if issues.count is None else issues.count.estimate


def reference_method(emb, noisy, n_classes, *, seed, **_):
    import warnings

    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    if noisy.ndim == 2:
        return _reference_multi_label(emb, noisy, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probs = cross_val_predict(LogisticRegression(C=0.01, max_iter=1000), emb, noisy,
                                  cv=StratifiedKFold(5, shuffle=True, random_state=seed), method="predict_proba")
    flagged = np.zeros(len(noisy), dtype=bool)
    flagged[find_label_issues(noisy, probs, return_indices_ranked_by="self_confidence")] = True
    return flagged, get_label_quality_scores(noisy, probs, method="self_confidence"), probs, None


def _reference_multi_label(emb, noisy, seed):
    import warnings

    from cleanlab.multilabel_classification.filter import find_label_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.multiclass import OneVsRestClassifier

    from audit.label_issues import cleanlab_tags

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probs = cross_val_predict(OneVsRestClassifier(LogisticRegression(C=0.01, max_iter=1000)), emb, noisy,
                                  cv=KFold(5, shuffle=True, random_state=seed), method="predict_proba")
    varying, tags, _ = cleanlab_tags(noisy)
    flagged, quality = np.zeros(len(noisy), dtype=bool), np.ones(len(noisy))
    if varying.any():
        flagged[find_label_issues(tags, probs[:, varying], return_indices_ranked_by="self_confidence")] = True
        quality = get_label_quality_scores(tags, probs[:, varying])
    return flagged, quality, probs, None


def evaluate(emb: np.ndarray, labels: np.ndarray, n_classes: int, run: RunOptions, *, noises, kind: str,
             repeats: int, baseline: str | None, progress=None, steps=None,
             reference_emb: np.ndarray | None = None) -> list[dict]:
    """One record per (noise, method): metric -> {mean, std, runs}.

    `run`: resolved options (RunOptions.resolve): the heads and the ranking use its folds, seed, l2, pca_dim,
    rank_by, filter_by, calibration and accelerator. `steps` (steps.Steps, tag sets): the step heads join the
    clip-statistics heads, as in a run. `reference_emb` (N, E): what the reference baseline is fitted on
    (`reference_options`' embeddings); None: `emb`.
    """
    assert run.filter_by is not None and run.pca_dim != "auto", "options must be resolved first"
    assert kind in NOISE_KINDS, kind
    seed = run.seed
    opts = dict(folds=run.folds, fold_repeats=run.fold_repeats, seed=seed, l2=run.l2, pca_dim=run.pca_dim,
                rank_by=run.rank_by, filter_by=run.filter_by, calibration=run.calibration, accelerator=run.accelerator)
    inputs = {"audit": emb, "reference": emb if reference_emb is None else reference_emb}  # (N, D), (N, E)
    assert len(inputs["reference"]) == len(emb), (len(inputs["reference"]), len(emb))
    confusion = clean_probs = None
    if kind == "confusable":  # the heads' probabilities on the clean labels (no ranking needed)
        from audit.folds import fold_ids
        from audit.pipeline import out_of_fold

        clean_probs = out_of_fold(emb, labels, fold_ids(labels, run.folds, seed), n_classes, l2=run.l2,
                                  pca_dim=run.pca_dim, calibration=run.calibration, seed=seed,
                                  accelerator=run.accelerator)  # (N, C); tag sets: without the step heads
        if labels.ndim == 1:
            confusion = np.stack([clean_probs[labels == c].mean(0) for c in range(n_classes)])  # (C, C)
    methods = {"audit": audit_method, **({"reference": reference_method} if baseline == "reference" else {})}
    records = []
    for noise in noises:
        if round(noise * len(labels)) == 0:
            raise UserError(f"--noise {noise}: flips no clip of {len(labels)}; raise it to at least {1 / len(labels):.3g}")
        runs = {m: [] for m in methods}
        for r in range(repeats):
            rng = np.random.default_rng([seed, r, int(round(noise * 1e6))])
            noisy, flipped = corrupt_tags(labels, noise, rng, clean_probs) if labels.ndim == 2 else \
                flip_labels(labels, n_classes, noise, kind, rng, confusion)
            for name, method in methods.items():
                extra = {"steps": steps} if name == "audit" else {}
                flagged, quality, _, estimated = method(inputs[name], noisy, n_classes, **{**opts, "seed": seed + r},
                                                        **extra)
                runs[name].append(score(flipped, flagged, quality, estimated))
                if progress:
                    progress(noise, r, name)
        for name, scores in runs.items():
            records.append({"noise": noise, "noise_kind": kind, "method": name, "repeats": repeats,
                            **{m: {"mean": float(np.mean([s[m] for s in scores])),
                                   "std": float(np.std([s[m] for s in scores])),
                                   "runs": [s[m] for s in scores]} for m in METRICS}})
    return records


def format_table(records: list[dict]) -> str:
    head = f"{'noise':>6}  {'method':<10}" + "".join(f"{m:>17}" for m in METRICS)
    lines = [head, "-" * len(head)]
    for rec in records:
        cells = "".join(f"{rec[m]['mean']:>10.3f} ±{rec[m]['std']:.3f}" for m in METRICS)
        lines.append(f"{rec['noise']:>6.2f}  {rec['method']:<10}{cells}")
    return "\n".join(lines)


def reference_options(opts: RunOptions) -> RunOptions | None:
    """The options that embed what the reference baseline is fitted on: the same encoder(s)' final embedding.

    None where audit's own embeddings already are that (`--features embedding`) or no encoder runs (--embeddings).
    """
    from dataclasses import replace

    if opts.embeddings or opts.features == REFERENCE_FEATURES:
        return None
    # no steps: they are for the step heads, and the reference has none
    return replace(opts, features=REFERENCE_FEATURES, step_heads=not opts.multi_label)


def evaluate_run(opts, *, noises: list[float], kind: str, repeats: int, baseline: str | None):
    """`audit evaluate` after its arguments: embed (resolved `opts`), evaluate with a progress bar, write
    OUT/eval.json and OUT/skipped.csv. (data, records) on rank 0; None on the other ranks."""
    import time
    from pathlib import Path

    from tqdm.auto import tqdm

    from audit import outputs, summary
    from audit.pipeline import embed_dataset

    start = time.perf_counter()
    choice = None
    if opts.encoder == AUTO:  # chosen once, so the reference below embeds with the same encoder
        from audit.choose import as_records
        from audit.pipeline import choose_encoder

        opts, choice = choose_encoder(opts)
    data = embed_dataset(opts)
    ref_opts = reference_options(opts) if baseline == "reference" else None
    reference = embed_dataset(ref_opts) if ref_opts is not None else None  # every rank: it may be a DDP stage too
    if data is None:
        return None
    if reference is not None and reference.clips["path"].tolist() != data.clips["path"].tolist():
        raise UserError("--baseline reference: its embedding pass could not use the same clips as audit's (a "
                        "transient read error?); run the same command again to retry them")
    methods = 1 + (baseline == "reference")
    bar = tqdm(total=len(noises) * repeats * methods, desc="evaluating", unit="fit", disable=not opts.progress)
    records = evaluate(data.emb, data.labels, len(data.classes), opts, noises=noises, kind=kind, repeats=repeats,
                       baseline=baseline, progress=lambda *_: bar.update(), steps=data.steps,
                       reference_emb=None if reference is None else reference.emb)
    bar.close()
    report = {"n_clips": len(data.clips), "n_skipped": len(data.skipped), "n_classes": len(data.classes),
              "noise_kind": kind, "repeats": repeats, "results": records,
              **({"reference_embedding_dim": int((data if reference is None else reference).emb.shape[1])}
                 if baseline == "reference" else {}),
              **({} if choice is None else {"encoder_choice": as_records(choice)}),
              "seconds": round(time.perf_counter() - start, 3), "encoder": opts.encoder, "seed": opts.seed,
              "versions": summary.versions(),
              "options": {**opts.as_dict(), "noise": noises, "noise_kind": kind, "repeats": repeats,
                          "baseline": baseline}}
    outputs.write_json(report, Path(opts.out) / "eval.json")
    outputs.write_csv(data.skipped, Path(opts.out) / "skipped.csv")
    return data, records
