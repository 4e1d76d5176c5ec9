"""How the cost of the number-of-issues estimate grows with N: issue_count.estimate vs cleanlab, same run.

Notation: N clips, K classes. Per size, seeded out-of-fold-like probabilities (N, K): each clip's softmax of
Gaussian logits with its true class raised, 5% of the labels flipped uniformly to another class (so the
estimate has something to count). Timed on the same arrays, in the same process, alternating:
  - `estimate`: audit's count with its bootstrap range (issue_count.estimate, the default --filter-by);
  - `rules`: its three rules once, without the range (issue_count.rule_counts);
  - baseline: cleanlab's find_label_issues(filter_by="prune_by_class"), what audit flagged with before
    (label_issues.py), and np.argsort of the quality (the ranking every run sorts anyway).
The best of --repeats per timing (these machines are noisy); ratios are against cleanlab on the same N.
Also prints the count against the true flips, as a sanity check that the timed work is the real one.

`--tags`: tag sets instead (K tags, each on ~20% of the clips, sigmoid probabilities, one tag dropped or added
on 5% of the clips): `estimate` is then the mixture and cleanlab's multi-label prune_by_class and both, with
the range; `rules` once; the ranking (label_issues.tag_quality); `cut`: what the flagged set's size adds on
top (label_issues.wrong_tag_margins from the ranking's scores, and issue_count.expected_f1_cut; `flagged`: its
size before a run holds it within the range); baseline cleanlab's multi-label
find_label_issues(filter_by="confident_learning"), the flags audit used for tag sets before the estimate.

    .venv/bin/python bench/bench_count.py [--sizes 10000 100000 1000000] [--classes 10 50] [--tags]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def synthetic(n: int, k: int, seed: int = 0) -> tuple:
    """(noisy labels (N,), probs (N, K) float32, flipped (N,) bool)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)).astype(np.float32)
    logits[np.arange(n), truth] += rng.normal(4.0, 1.5, n).astype(np.float32)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    flipped = rng.random(n) < 0.05
    noisy = truth.copy()
    noisy[flipped] = (truth[flipped] + rng.integers(1, k, flipped.sum())) % k
    return noisy, probs, flipped


def synthetic_tags(n: int, k: int, seed: int = 0) -> tuple:
    """(noisy multi-hot (N, K) int8, probs (N, K) sigmoid, corrupted (N,) bool)."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, k)) < 0.2
    logits = np.where(truth, rng.normal(3.0, 1.5, (n, k)), rng.normal(-3.0, 1.5, (n, k)))
    probs = 1 / (1 + np.exp(-logits))
    corrupted = rng.random(n) < 0.05
    noisy = truth.copy()
    rows = np.flatnonzero(corrupted)
    cols = rng.integers(0, k, len(rows))
    noisy[rows, cols] = ~noisy[rows, cols]  # one tag dropped or added
    return noisy.astype(np.int8), probs, corrupted


def time_tags(sizes, tags, repeats: int) -> None:
    from cleanlab.multilabel_classification.filter import find_label_issues

    from audit import issue_count
    from audit.label_issues import (cleanlab_tags, tag_margins, tag_quality, tag_scores, worst_tag_margin,
                                    wrong_tag_margins)
    from audit.options import DEFAULT_RANK_BY

    print("| N | tags | corrupted | estimate (range) | flagged | estimate s | rules once s | ranking s | cut s | "
          "cleanlab confident_learning s | estimate ÷ cleanlab |\n|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for k in tags:
        for n in sizes:
            labels, probs, corrupted = synthetic_tags(n, k)
            t_rank, quality = best_of(lambda: tag_quality(labels, probs, DEFAULT_RANK_BY), repeats)
            t_est, count = best_of(lambda: issue_count.estimate(labels, probs, quality), repeats)
            t_rules, _ = best_of(lambda: issue_count.rule_counts(labels, probs, quality), repeats)
            scored = tag_scores(labels, probs, DEFAULT_RANK_BY)  # a run has it from the ranking
            worst = np.sort(worst_tag_margin(tag_margins(labels, probs, DEFAULT_RANK_BY, scored=scored)))  # (N,)
            t_cut, flagged = best_of(lambda: issue_count.expected_f1_cut(
                worst, wrong_tag_margins(probs, DEFAULT_RANK_BY, scored), count.estimate), repeats)
            varying, tag_lists, n_jobs = cleanlab_tags(labels)
            t_cl, _ = best_of(lambda: find_label_issues(tag_lists, probs[:, varying], filter_by="confident_learning",
                                                        n_jobs=n_jobs), repeats)
            found = f"{count.estimate:,.0f} ({count.low:,.0f}-{count.high:,.0f})"
            times = f"{t_est:.2f} | {t_rules:.2f} | {t_rank:.2f} | {t_cut:.2f} | {t_cl:.2f} | {t_est / t_cl:.2f}"
            print(f"| {n:,} | {k} | {int(corrupted.sum()):,} | {found} | {flagged:,} | {times} |", flush=True)


def best_of(fn, repeats: int) -> tuple:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    p.add_argument("--classes", nargs="+", type=int, default=[10, 50])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tags", action="store_true", help="tag sets (multi-label): --classes are then tags")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    if args.tags:
        return time_tags(args.sizes, args.classes, args.repeats)
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    from audit import issue_count
    from audit.label_issues import PARALLEL_FROM
    from audit.options import DEFAULT_RANK_BY

    print("| N | K | flips | estimate (range) | estimate s | rules once s | cleanlab prune_by_class s | argsort s | "
          "estimate ÷ cleanlab |\n|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for k in args.classes:
        for n in args.sizes:
            labels, probs, flipped = synthetic(n, k)
            quality = get_label_quality_scores(labels, probs, method=DEFAULT_RANK_BY)  # (N,) as a run ranks
            t_est, count = best_of(lambda: issue_count.estimate(labels, probs, quality), args.repeats)
            t_rules, _ = best_of(lambda: issue_count.rule_counts(labels, probs, quality), args.repeats)
            t_cl, _ = best_of(lambda: find_label_issues(labels, probs, filter_by="prune_by_class",
                                                                n_jobs=1 if n < PARALLEL_FROM else None), args.repeats)
            t_sort, _ = best_of(lambda: np.argsort(quality), args.repeats)
            found = f"{count.estimate:,.0f} ({count.low:,.0f}-{count.high:,.0f})"
            times = f"{t_est:.2f} | {t_rules:.2f} | {t_cl:.2f} | {t_sort:.3f} | {t_est / t_cl:.2f}"
            print(f"| {n:,} | {k} | {int(flipped.sum()):,} | {found} | {times} |", flush=True)


if __name__ == "__main__":
    main()
