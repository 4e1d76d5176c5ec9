"""How many labels are wrong: the size of the flagged set, with a range a user can quote.

Notation: N clips, K classes (or tags), M wrong-label probabilities (clip, other class pairs). Three
estimates of the number of wrong labels from the out-of-fold probabilities (N, K) and the label quality
scores (N,), and their median. Class labels:
  mixture   two Gaussians fitted to the logit of the label quality: clips nearer the low one (a given
            label the heads do not believe) are counted
  mpe_min   mixture proportion estimation with a known component. Out of fold, a clip's probabilities
            never saw its own label, so a clip labelled with a wrong class c scores the probability the
            heads give c, and the probabilities every clip gives its other classes sample that
            distribution (F). Below any threshold t, the clips (G(t)) are at least the wrong ones, N_wrong
            x F(t): G(t) / F(t) bounds N_wrong from above at every t. mpe_min is the smallest bound over
            the thresholds with at least MPE_MIN_BELOW clips below or in mpe_tail's range: the minimum
            of noisy ratios, so it under-counts (0.46-0.98 of the flips)
  mpe_tail  the smallest bound over the thresholds above MPE_TAIL of the wrong-label probabilities: within
            16% where the right labels' probabilities sit above that (sharp heads), up to 2.8x where weak
            heads give many right labels less (emotional speech)
Tag sets: the mixture and cleanlab's multi-label `prune_by_class` and `both` counts; their flagged set stops
where the expected F1 at that count is best (expected_f1_cut, label_issues.cut).
A clean set whose lowest given-label probability is above MPE_TAIL of the wrong-label probabilities has
both bounds at 0 (no clip below a threshold that most wrong labels would fall under).

Measured on 10 real and built sets x 3 noise settings x 6 repeats (bench/cut_study.py, bench/RESULTS.md):
each rule fails somewhere different (the mixture splits one population in two where few labels are
wrong and over-counts up to 1.8x where confusable flips form a middle group), and the median, which is
the mixture clipped into [mpe_min, mpe_tail], put the flagged set within 0.03 F1 of the best cut and
the count within 15% of the true flips on 25 of the 30 cells (mean |count / flips - 1| 0.06); the
median of the mixture, prune_by_class and both before it, on 15 (0.17, up to 2.3x on emotional speech).
The rule was chosen on repeats 0-2 (24 of 30) and held on fresh repeats 3-5 (27 of 30). On the sets'
labels as published it counts 0 on four sets, 2-4 on five and 21 of 767 on emotional speech.

The range is the 5th-95th percentile of the median over bootstrap resamples of the clips (at most
BOOTSTRAP_ROWS rows each; above, the resamples' spread is scaled back to N rows): the uncertainty of
estimating from this many clips, not of the rules themselves (bench/RESULTS.md says how often the true
count fell inside it). Cost on class labels (bench/bench_count.py): the rules once 0.07-0.3 s from 10k to
1M clips (the mixture's EM runs on a histogram, the bounds sort N probabilities), the range 3-5 s at any N.
Tag sets call cleanlab's multi-label filters, which loop over the tags, in every resample, so theirs hold at
most TAG_CELLS clip x tag cells (at least BOOTSTRAP_MIN_ROWS clips): 10-28 s at 10k-100k clips x 10-50 tags
(272 s at 100k x 50 before the cap), 29 s at 1M x 10 (27 s of it the rules once on all clips).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS_RULES = ("mixture", "mpe_min", "mpe_tail")
TAG_RULES = ("mixture", "prune_by_class", "both")
BOOTSTRAP = 50
BOOTSTRAP_ROWS = 50_000  # per resample: the range costs the same at any N
TAG_CELLS = 50_000  # tag sets' resamples: at most this many clip x tag cells (cleanlab's filters loop over tags)
BOOTSTRAP_MIN_ROWS = 1_000  # ... but at least this many clips
QUALITY_FLOOR = 1e-6  # the logit of a quality of 0 or 1 is clipped here
MPE_MIN_BELOW = 10  # mpe_min: thresholds with at least this many clips below (fewer: a ratio of a few clips)
MPE_TAIL = 0.9  # mpe_tail: thresholds above this share of the wrong-label probabilities
WRONG_VALUES = 500_000  # the wrong-label probabilities kept (every s-th clip's): F's precision, not N's cost
MIXTURE_BINS = 2048  # EM's histogram of the logit qualities: bins ~0.01 wide on the usual -14..14 range
EM_ITERATIONS = 200
EM_TOLERANCE = 1e-6  # on the responsibilities
VAR_FLOOR = 1e-3  # x the data's variance, added to each component's (sklearn's reg_covar, made relative)


@dataclass(frozen=True)
class IssueCount:
    estimate: float  # the median of the rules' counts
    low: float  # 5th percentile over bootstrap resamples
    high: float  # 95th
    rules: dict  # rule -> count on all clips
    flagged: int  # the flagged set's size: the estimate, rounded (class labels) or expected_f1_cut's (tag sets)


def mixture_count(quality: np.ndarray) -> int:
    """Clips whose logit label quality is nearer (by posterior) the lower of two Gaussians fitted by EM.

    Qualities at the ceiling (1 - QUALITY_FLOOR: sharp heads round them to 1) are left out of the fit and
    counted as right: as a spike they would pull one component to zero width and leave every other clip low.
    EM runs on a histogram of the logits (MIXTURE_BINS bins, each at its centre, weighted by its clips), so
    an iteration costs the same at any N; the fitted components then classify every clip's own logit.
    """
    x = log_odds(quality)[quality < 1 - QUALITY_FLOOR]  # (n,) NaN qualities drop out here too
    if len(x) < 2 or np.ptp(x) < 1e-9:  # one value: nothing stands apart
        return 0
    counts, edges = np.histogram(x, bins=MIXTURE_BINS)
    filled = counts > 0
    centre, clips = ((edges[:-1] + edges[1:]) / 2)[filled], counts[filled].astype(np.float64)  # (b,), (b,)
    floor = VAR_FLOOR * x.var()  # relative to the data's spread
    mean = np.array([x.min(), x.max()])
    near_high = np.abs(centre - mean[1]) < np.abs(centre - mean[0])  # start: each bin with the nearer extreme
    resp = np.stack([~near_high, near_high], 1).astype(np.float64)  # (b, 2)
    for i in range(EM_ITERATIONS):
        weight = (clips[:, None] * resp).sum(0) + 1e-12  # (2,)
        if i:  # the first pass keeps the extremes as means, the assignments only set spreads and weights
            mean = (clips[:, None] * resp * centre[:, None]).sum(0) / weight
        var = (clips[:, None] * resp * (centre[:, None] - mean) ** 2).sum(0) / weight + floor
        log_p = _log_components(centre, weight / len(x), mean, var)  # (b, 2)
        top = log_p.max(1, keepdims=True)
        new = np.exp(log_p - top - np.log(np.exp(log_p - top).sum(1, keepdims=True)))
        if i and np.abs(new - resp).max() < EM_TOLERANCE:
            resp = new
            break
        resp = new
    low = int(np.argmin(mean))
    log_p = _log_components(x, weight / len(x), mean, var)  # (N, 2) every clip, by its own logit
    return int((log_p[:, low] > log_p[:, 1 - low]).sum())


def log_odds(x: np.ndarray) -> np.ndarray:
    """log(x / (1 - x)), x clipped to [QUALITY_FLOOR, 1 - QUALITY_FLOOR] first: within +-13.8."""
    x = np.clip(x, QUALITY_FLOOR, 1 - QUALITY_FLOOR)
    return np.log(x) - np.log1p(-x)


def _log_components(x: np.ndarray, share: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """(len(x), 2): log of each component's share x its Gaussian density at x."""
    return np.log(share) - 0.5 * np.log(2 * np.pi * var) - 0.5 * (x[:, None] - mean) ** 2 / var


def wrong_label_bounds(labels: np.ndarray, probs: np.ndarray) -> dict:
    """mpe_min and mpe_tail (module docstring) for class ids `labels` (N,) and out-of-fold `probs` (N, K)."""
    n, k = probs.shape
    q = np.sort(probs[np.arange(n), labels])  # (N,) the given labels' probabilities: the self-confidence
    if k < 2 or n == 0:
        return {"mpe_min": 0.0, "mpe_tail": 0.0}
    step = max(1, -(-n * (k - 1) // WRONG_VALUES))  # every step-th clip's other classes: at most WRONG_VALUES
    rows = np.arange(0, n, step)
    other = np.ones((len(rows), k), bool)
    other[np.arange(len(rows)), labels[rows]] = False
    wrong = np.sort(probs[rows][other])  # (M,) F's sample
    if np.searchsorted(wrong, q[0], side="left") >= MPE_TAIL * len(wrong):  # no clip below t, most wrong ones would be
        return {"mpe_min": 0.0, "mpe_tail": 0.0}
    below = np.arange(1, n + 1, dtype=np.float64)  # G at each threshold t = q[i] (ties: the last one counts)
    last = np.r_[q[1:] != q[:-1], True]
    f = np.searchsorted(wrong, q, side="right") / len(wrong)  # F(t)
    ok = last & (f > 0)
    bound = np.full(n, np.inf)
    bound[ok] = below[ok] / f[ok]  # G(t) / F(t): at least the wrong labels

    def least(keep):
        return float(min(bound[keep].min(), n)) if keep.any() else float(n)

    tail = ok & (f >= MPE_TAIL)
    return {"mpe_min": least(tail | (ok & (below >= MPE_MIN_BELOW))), "mpe_tail": least(tail)}


def rule_counts(labels: np.ndarray, probs: np.ndarray, quality: np.ndarray) -> dict:
    """Each rule's count of wrong labels (module docstring): CLASS_RULES for class ids, TAG_RULES for tags."""
    if labels.ndim == 1:
        return {"mixture": mixture_count(quality), **wrong_label_bounds(labels, probs)}
    import warnings

    with warnings.catch_warnings():  # "too few examples in class c": expected in resamples, said for every one
        warnings.simplefilter("ignore", UserWarning)
        return {"mixture": mixture_count(quality), **_tag_counts(labels, probs)}


def _tag_counts(labels: np.ndarray, probs: np.ndarray) -> dict:
    from cleanlab.multilabel_classification.filter import find_label_issues as cleanlab_find

    from audit.label_issues import cleanlab_tags

    varying, tags, n_jobs = cleanlab_tags(labels)  # a resample can leave a tag on every clip or none
    if not varying.any():
        return {r: 0 for r in TAG_RULES[1:]}
    return {r: int(cleanlab_find(tags, probs[:, varying], filter_by=r, n_jobs=n_jobs).sum()) for r in TAG_RULES[1:]}


def resample_rows(labels: np.ndarray) -> int:
    """Clips per bootstrap resample: BOOTSTRAP_ROWS for class ids; for tags (N, K) at most TAG_CELLS cells,
    at least BOOTSTRAP_MIN_ROWS clips; never more than N."""
    if labels.ndim == 1:
        return min(len(labels), BOOTSTRAP_ROWS)
    return min(len(labels), max(BOOTSTRAP_MIN_ROWS, TAG_CELLS // max(1, labels.shape[1])))


def estimate(labels: np.ndarray, probs: np.ndarray, quality: np.ndarray, seed: int = 0,
             bootstrap: int = BOOTSTRAP) -> IssueCount:
    counts = rule_counts(labels, probs, quality)
    n = len(labels)
    rng = np.random.default_rng(seed)
    size = resample_rows(labels)
    median = float(np.median(list(counts.values())))
    scaled = np.array([np.median(list(rule_counts(labels[rows], probs[rows], quality[rows]).values())) * n / size
                       for rows in (rng.integers(0, n, size) for _ in range(bootstrap))])  # (B,) counts scaled to N
    # A count from `size` rows scaled to N spreads sqrt(N / size) times wider than one from N rows: shrink it back.
    totals = median + (scaled - np.median(scaled)) * np.sqrt(size / n) if bootstrap else np.array([median])
    low, high = np.clip(np.percentile(totals, [5, 95]), 0, n)  # the shrunk spread can reach past 0 or N
    return IssueCount(estimate=median, low=float(min(low, median)), high=float(max(high, median)), rules=counts,
                      flagged=int(round(median)))


def expected_f1_cut(scores: np.ndarray, wrong: np.ndarray, estimate: float) -> int:
    """How many of the ranked `scores` (N,) (ascending: most likely wrong first) to flag, given `wrong` (M,)
    sorted, a sample of the scores wrong labels have, and `estimate` E wrong labels in all: the top k hold
    about min(k, E, E x F(k-th score)) of them (F: the CDF of `wrong`), and k maximises the F1 that implies,
    2 x that / (k + E). Where wrong labels sit below the right ones, k is E; where the tail of the ranking is
    mostly right labels, k stops short of E (tag sets: see label_issues.cut)."""
    if estimate < 0.5 or not len(wrong) or not len(scores):
        return int(round(estimate))
    k = np.arange(1, len(scores) + 1)
    found = np.searchsorted(wrong, scores, side="right") / len(wrong) * estimate  # (N,) E x F
    found = np.maximum.accumulate(np.minimum(np.minimum(found, k), estimate))
    f1 = 2 * found / (k + estimate)
    return int(np.argmax(f1)) + 1 if f1.max() > 0 else int(round(estimate))
