"""Where to cut the ranking: calibration methods x rules for the number of issues, on every evaluation set.

    .venv/bin/python bench/embed_sets.py            # once: embeddings of every set (bench/out/emb)
    .venv/bin/python bench/cut_study.py [--sets esc10 ...] [--repeats 3]

Per set (the sets of bench/embed_sets.py: class labels; tag sets with one tag per clip corrupted), noise
setting (5% and 10% uniform and 5% confusable flips; tag sets 5% and 10% any tag, 5% confusable tags;
`--kinds` picks) and repeat: the labels are flipped as `audit evaluate` flips them, the heads give out-of-fold
probabilities at the run's defaults (`--fold-repeats auto`: as a run, the mean over 3 fold splits for class
labels, one for tag sets, whose step heads join) and, with one split, the inner held-out probabilities
calibration is fitted on (heads.inner_held_out_probs), and each calibration (none, temperature) x counting
rule is scored on the same probabilities:
  - the ranking: AP of the label quality score (rank_by, the run's default) and the F1 of its best cut;
  - each rule's count against the true number of flips, and the F1 of the top of the ranking at that
    size (the flagged set a run with that rule would give): issue_count.py's three rules and their
    median (the run's estimate, with its bootstrap range: does it hold the true count?);
  - cleanlab's find_label_issues as audit flagged before (prune_by_class; confident_learning on tag
    sets), and on class labels the estimate audit used until 2026-12-03 (the median of the mixture,
    prune_by_class and both), for comparison;
  - the oracle: the top of the ranking at the true number of flips. Where even it is more than 0.03 F1
    below the best cut, no count estimate meets issue 19's bar on that cell.
Each fit's probabilities are kept in bench/out/cut_probs/ (`--rescore` scores them again with the current
issue_count.py, without refitting). Writes bench/out/cut_study.json and prints per set and setting the
mean over repeats (F1 gap to the best cut, count / flips) and the markdown table of bench/RESULTS.md.
`--first-repeat 3` numbers the repeats from 3: fresh flips and folds, to check out of sample a rule that
was chosen on repeats 0-2. `--clean` fits each set's labels as published (no flips) and prints what a run
would report there, the estimate beside the previous one and cleanlab's counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
OUT = ROOT / "bench" / "out"
SETTINGS = (("uniform", 0.05), ("uniform", 0.10), ("confusable", 0.05))
METHODS = ("none", "temperature")  # vector scaling raised the held-out log-loss on every set in a first pass (1 repeat)
# one tag dropped or swapped per corrupted clip: any tag, or (confusable-tags) the tags the heads doubt / half hear
TAG_SETTINGS = (("tags", 0.05), ("tags", 0.10), ("confusable-tags", 0.05))
PREVIOUS = "previous estimate (mixture, prune_by_class, both)"  # class labels' estimate until 2026-12-03


def f1_at(flipped: np.ndarray, order: np.ndarray, n: int) -> float:
    hits = int(flipped[order[:n]].sum())
    return 2 * hits / (n + int(flipped.sum())) if n + flipped.sum() else 0.0


def score(base: dict, p: np.ndarray, noisy: np.ndarray, flipped: np.ndarray, seed: int) -> list[dict]:
    """One record per rule for one fit's probabilities `p` (N, K) of the `noisy` labels, `flipped` the truth."""
    from sklearn.metrics import average_precision_score

    from audit.label_issues import find_label_issues
    from audit.options import DEFAULT_RANK_BY

    multi = noisy.ndim == 2
    found = find_label_issues(noisy, p, filter_by="confident_learning" if multi else "prune_by_class",
                              rank_by=DEFAULT_RANK_BY)  # how audit flagged before the estimate
    quality, flagged = found.quality, found.flagged
    order = np.lexsort((np.arange(len(quality)), quality))
    hits = np.cumsum(flipped[order])
    best = float((2 * hits / (np.arange(1, len(order) + 1) + flipped.sum())).max())
    given_p = np.where(noisy == 1, p, 1 - p) if multi else p[np.arange(len(noisy)), noisy]
    base = {**base, "n_flips": int(flipped.sum()), "best_cut_f1": best,
            "ap": float(average_precision_score(flipped, -quality)),
            "log_loss": float(-np.log(np.clip(given_p, 1e-12, None)).mean())}
    tp = int((flagged & flipped).sum())
    rules = {"cleanlab filter (flags)": (flagged.sum(), 2 * tp / (flagged.sum() + flipped.sum()), None)}
    t = time.perf_counter()
    est = find_label_issues(noisy, p, filter_by="estimate", rank_by=DEFAULT_RANK_BY, seed=seed)  # as a run flags
    base["estimate_s"] = round(time.perf_counter() - t, 3)  # the ranking, the count and (tag sets) the cut
    c = est.count
    hits = int((est.flagged & flipped).sum())
    base["flagged"] = int(est.flagged.sum())  # the estimate rounded; tag sets: issue_count.expected_f1_cut's size
    rules["estimate (median)"] = (c.estimate, 2 * hits / (base["flagged"] + flipped.sum()), (c.low, c.high))
    for rule, count in c.rules.items():
        rules[rule] = (count, None, None)
    if not multi:  # the class-label estimate until 2026-12-03, on the same fits: is the new one better out of sample?
        rules[PREVIOUS] = (previous_estimate(noisy, p, c.rules["mixture"])["previous"], None, None)
    # what no count can beat: the top of the ranking at the true number of flips (is the bar reachable?)
    rules["true count (oracle)"] = (int(flipped.sum()), None, None)
    records = []
    for rule, (count, f1, interval) in rules.items():
        rec = {**base, "rule": rule, "count": float(count),
               "f1": f1 if f1 is not None else f1_at(flipped, order, int(round(count)))}
        if interval:
            rec["low"], rec["high"] = interval
        records.append(rec)
    return records


def split_tag(splits: int) -> str:
    """The stored fit's file-name suffix: none for one split (the files of before), _f3 for three."""
    return "" if splits == 1 else f"_f{splits}"


def rescore(records: list[dict]) -> list[dict]:
    """The same fits (bench/out/cut_probs) scored again with the current rules."""
    out, seen = [], set()
    for rec in records:
        splits = rec.get("fold_repeats", 1)  # records written before --fold-repeats: one split
        key = (rec["set"], rec["kind"], rec["noise"], rec["repeat"], rec["calibration"])
        if key + (splits,) in seen:
            continue
        seen.add(key + (splits,))
        with np.load(OUT / "cut_probs" / ("{}_{}_{}_{}_{}".format(*key) + split_tag(splits) + ".npz")) as f:
            p, noisy, flipped = f["probs"], f["noisy"], f["flipped"]
        base = {k: rec[k] for k in ("set", "n", "classes", "kind", "noise", "repeat", "calibration", "heads_s",
                                    "calibration_s")}
        base["fold_repeats"] = splits
        out += score(base, p, noisy, flipped, rec["repeat"])  # the study seeds the estimate with seed 0 + repeat
    return out


def study_set(name: str, repeats: int, seed: int = 0, methods: tuple = METHODS, first: int = 0,
              kinds: tuple | None = None, fold_repeats: int | str = "auto") -> list[dict]:
    from audit import calibration, heads, instance_heads
    from audit.evaluate import corrupt_tags, flip_labels
    from audit.folds import fold_ids
    from audit.options import DEFAULT_L2, fold_repeats_for, task_defaults
    from audit.pipeline import repeated_out_of_fold
    from embed_sets import load

    d = load(name)
    emb, labels, steps = d["emb"], d["labels"], d["steps"]
    k = len(d["classes"])
    multi = labels.ndim == 2
    pca_dim, _ = task_defaults(multi)
    fit = dict(l2=DEFAULT_L2, pca_dim=pca_dim)
    clean = heads.out_of_fold_probs(emb, labels, fold_ids(labels, 5, seed), k, seed=seed, **fit)  # tag sets: clip heads
    confusion = None if multi else np.stack([clean[labels == c].mean(0) for c in range(k)])
    splits = fold_repeats_for(fold_repeats, len(labels), multi)  # as a run resolves --fold-repeats
    records = []
    for kind, noise in (TAG_SETTINGS if multi else SETTINGS):
        if kinds and kind not in kinds:
            continue
        for r in range(first, first + repeats):
            rng = np.random.default_rng([seed, r, int(round(noise * 1e6))])
            noisy, flipped = corrupt_tags(labels, noise, rng, clean if kind == "confusable-tags" else None) if multi \
                else flip_labels(labels, k, noise, kind, rng, confusion)
            folds = fold_ids(noisy, 5, seed + r)
            t = time.perf_counter()
            if splits > 1:  # the mean over splits (split 0 is the one below), as a run makes it; no held-out fit
                probs, held = repeated_out_of_fold(emb, noisy, k, steps, n_folds=5, fold_repeats=splits,
                                                   seed=seed + r, calibration="none", accelerator="cpu", **fit), None
            else:
                probs, held = heads.out_of_fold_probs(emb, noisy, folds, k, seed=seed + r, held_out=True, **fit)
                if steps is not None:  # tag sets: the step heads join, as in a run; their mix has no held-out fit
                    probs = instance_heads.with_step_heads(probs, steps, noisy, folds, pca_dim=pca_dim,
                                                           seed=seed + r)
                    held = None
            heads_s = time.perf_counter() - t
            for method in (("none",) if held is None else methods):
                t = time.perf_counter()
                p = calibration.calibrate(probs, noisy, folds, held, method)
                cal_s = time.perf_counter() - t
                keep = OUT / "cut_probs" / f"{name}_{kind}_{noise}_{r}_{method}{split_tag(splits)}.npz"
                keep.parent.mkdir(parents=True, exist_ok=True)
                np.savez(keep, probs=p, noisy=noisy, flipped=flipped, folds=folds)  # rules can be tried offline
                # (folds: the first split's; with more, split j is fold_ids(noisy, 5, seed + r + FOLD_SEED_STEP j))
                base = {"set": name, "n": len(labels), "classes": k, "kind": kind, "noise": noise, "repeat": r,
                        "calibration": method, "fold_repeats": splits, "heads_s": round(heads_s, 2),
                        "calibration_s": round(cal_s, 3)}
                records += score(base, p, noisy, flipped, seed + r)
    return records


def previous_estimate(labels: np.ndarray, p: np.ndarray, mixture: int) -> dict:
    """The class-label estimate until 2026-12-03 (median of the mixture, prune_by_class and both) and its parts."""
    from cleanlab.filter import find_label_issues as cleanlab_find

    counts = {r: int(cleanlab_find(labels, p, filter_by=r).sum()) for r in ("prune_by_class", "both")}
    return {"previous": float(np.median([mixture, *counts.values()])), **counts}


def clean_counts(name: str, seed: int = 0) -> dict:
    """The count on the labels as published (no flips): what a run on a healthy set reports, old rule beside new."""
    from audit import heads, instance_heads, issue_count
    from audit.folds import fold_ids
    from audit.label_issues import find_label_issues
    from audit.options import DEFAULT_L2, DEFAULT_RANK_BY, task_defaults
    from embed_sets import load

    d = load(name)
    emb, labels, steps = d["emb"], d["labels"], d["steps"]
    k = len(d["classes"])
    multi = labels.ndim == 2
    pca_dim = task_defaults(multi)[0]
    folds = fold_ids(labels, 5, seed)
    p = heads.out_of_fold_probs(emb, labels, folds, k, seed=seed, l2=DEFAULT_L2, pca_dim=pca_dim)
    if multi:  # tag sets: the step heads join and the clips rank by their worst tag, as in a run
        if steps is not None:
            p = instance_heads.with_step_heads(p, steps, labels, folds, pca_dim=pca_dim, seed=seed)
        found = find_label_issues(labels, p, filter_by="estimate", rank_by=DEFAULT_RANK_BY, seed=seed)
        c = found.count
        extra = {"flagged": int(found.flagged.sum()),  # issue_count.expected_f1_cut's size
                 "predicted_neq_given": int(((p >= 0.5) != labels.astype(bool)).any(1).sum())}
    else:
        c = issue_count.estimate(labels, p, p[np.arange(len(labels)), labels], seed=seed)
        extra = {**previous_estimate(labels, p, c.rules["mixture"]),
                 "predicted_neq_given": int((p.argmax(1) != labels).sum())}
    return {"set": name, "n": len(labels), "classes": k, "estimate": c.estimate, "low": c.low, "high": c.high,
            **c.rules, **extra}


def summarize(records: list[dict]) -> None:
    import pandas as pd

    df = pd.DataFrame(records)
    df["gap"] = df["best_cut_f1"] - df["f1"]
    df["count_ratio"] = df["count"] / df["n_flips"]
    df["covered"] = (df["low"] <= df["n_flips"]) & (df["n_flips"] <= df["high"]) if "low" in df else np.nan
    g = df.groupby(["calibration", "rule", "set", "kind", "noise"], sort=False)
    table = g.agg(ap=("ap", "mean"), best=("best_cut_f1", "mean"), f1=("f1", "mean"), gap=("gap", "mean"),
                  ratio=("count_ratio", "mean"), covered=("covered", "mean"), log_loss=("log_loss", "mean"))
    pd.set_option("display.width", 200, "display.max_rows", 1000)
    print(table.round(3).to_string())
    per_rule = df.groupby(["calibration", "rule", "set", "kind", "noise"]).agg(
        gap=("gap", "mean"), ratio=("count_ratio", "mean")).reset_index()
    per_rule["ok"] = (per_rule["gap"] <= 0.03) & ((per_rule["ratio"] - 1).abs() <= 0.15)
    print(per_rule.groupby(["calibration", "rule"]).agg(
        settings=("ok", "size"), met=("ok", "sum"), worst_gap=("gap", "max"),
        worst_ratio_off=("ratio", lambda r: float((r - 1).abs().max()))).round(3).to_string())


def markdown(records: list[dict]) -> str:
    """The table for bench/RESULTS.md: per set and setting, mean over repeats, before (cleanlab's flags) and
    after (the estimate's cut), each calibration."""
    import pandas as pd

    df = pd.DataFrame(records)
    df["gap"] = df["best_cut_f1"] - df["f1"]
    df["ratio"] = df["count"] / df["n_flips"]
    if "low" in df:
        df["covered"] = (df["low"] <= df["n_flips"]) & (df["n_flips"] <= df["high"])
    key = ["set", "n", "classes", "kind", "noise", "calibration"]
    g = df.groupby(key + ["rule"], sort=False).agg(ap=("ap", "mean"), best=("best_cut_f1", "mean"), f1=("f1", "mean"),
                                                   gap=("gap", "mean"), ratio=("ratio", "mean"),
                                                   covered=("covered", "mean"), flips=("n_flips", "mean"),
                                                   repeats=("repeat", "nunique")).reset_index()
    lines = ["| set (clips, classes) | flips | calibration | AP | best-cut F1 | before: F1 / count ÷ flips | "
             "after: F1 / count ÷ flips | F1 at the true count | range holds the truth | within bar |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    met = total = 0
    for k, rows in g.groupby(key, sort=False):
        by = rows.set_index("rule")
        before, after = by.loc["cleanlab filter (flags)"], by.loc["estimate (median)"]
        oracle = f"{by.loc['true count (oracle)', 'f1']:.3f}" if "true count (oracle)" in by.index else "-"
        ok = after["gap"] <= 0.03 and abs(after["ratio"] - 1) <= 0.15
        met, total = met + ok, total + 1
        lines.append(f"| {k[0]} ({k[1]}, {k[2]}) | {k[4]:.0%} {k[3]} | {k[5]} | {after['ap']:.3f} | {after['best']:.3f} | "
                     f"{before['f1']:.3f} / {before['ratio']:.2f} | **{after['f1']:.3f} / {after['ratio']:.2f}** | {oracle} | "
                     f"{after['covered']:.0%} | {'yes' if ok else 'no'} |")
    lines.append(f"\nWithin the bar (F1 within 0.03 of the best cut and count within 15%, means over "
                 f"{int(g['repeats'].max())} repeats): {met} of {total} rows.")
    return "\n".join(lines)


def main() -> None:
    from audit.arg_types import fold_repeats_arg

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["esc10", "esc50", "philharmonia", "fsdd-digits", "fsdd-speakers",
                                                   "words", "ravdess", "arabic-digits", "ukrainian-digits",
                                                   "bengali-digits", "multilabel", "multilabel-words"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--first-repeat", type=int, default=0,
                   help="number the repeats from here (fresh flips and folds: 3 checks a rule chosen on 0-2 "
                        "out of sample)")
    p.add_argument("--calibrations", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--kinds", nargs="+", choices=sorted({k for k, _ in SETTINGS + TAG_SETTINGS}),
                   help="only these noise kinds (default: every one of SETTINGS and TAG_SETTINGS)")
    p.add_argument("--fold-repeats", default="auto", type=fold_repeats_arg,
                   help="fold splits averaged per fit, as a run's --fold-repeats (auto: the run's default; with "
                        "more than one, only calibration none)")
    p.add_argument("--json", default=str(OUT / "cut_study.json"))
    p.add_argument("--summarize", action="store_true", help="only print the table of an existing --json")
    p.add_argument("--rescore", action="store_true",
                   help="score the fits of an existing --json again (their probabilities in bench/out/cut_probs) "
                        "with the current rules, and rewrite it")
    p.add_argument("--clean", action="store_true",
                   help="only count issues on each set's labels as published (no flips), new estimate beside the old")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if args.clean:
        import pandas as pd

        rows = [clean_counts(name) for name in args.sets]
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))
        print(pd.DataFrame(rows).round(1).to_string(index=False))
        return
    if args.summarize or args.rescore:
        records = json.loads(Path(args.json).read_text())
        if args.rescore:
            records = rescore(records)
            Path(args.json).write_text(json.dumps(records, indent=1, default=float))
        summarize(records)
        print(markdown(records))
        return
    records = []
    for name in args.sets:
        t = time.perf_counter()
        records += study_set(name, args.repeats, methods=tuple(args.calibrations), first=args.first_repeat,
                             kinds=tuple(args.kinds or ()), fold_repeats=args.fold_repeats)
        print(f"{name}: {time.perf_counter() - t:.0f} s", flush=True)
        Path(args.json).write_text(json.dumps(records, indent=1, default=float))
    summarize(records)
    print(markdown(records))


if __name__ == "__main__":
    main()
