"""How many labels are wrong: the size of the flagged set, with a range a user can quote.

Notation: N clips, K classes (or tags). Three estimates of the number of wrong labels, each from the
out-of-fold probabilities (N, K) and the label quality scores (N,), and their median:
  mixture         two Gaussians fitted to the logit of the label quality: clips nearer the low one
                  (a given label the heads do not believe) are counted
  prune_by_class  cleanlab's count from the calibrated confident joint, class by class
  both            cleanlab's stricter rule (prune_by_class and prune_by_noise_rate agree)
Measured on 10 real and built sets x 3 noise settings (bench/cut_study.py, bench/RESULTS.md), each
fails somewhere different: the mixture over-counts where confusable flips form a third, middle
population (spoken words), the confident joint over-counts where the heads are weak (50 sound-event
classes, instruments), `both` under-counts at 10% flips. Their median was within 15% of the true count
on 25 of the 30 set x noise cells (some single rule was on 29, but no one rule everywhere); mean
absolute error of count / flips 0.175, against 0.177 (mixture), 0.249 (prune_by_class), 0.233 (both).

The range is the 5th-95th percentile of the median over bootstrap resamples of the clips (at most
BOOTSTRAP_ROWS rows each; above, the resamples' spread is scaled back to N rows): the uncertainty of
estimating from this many clips, not of the rules themselves (bench/RESULTS.md says how often the true
count fell inside it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RULES = ("mixture", "prune_by_class", "both")
BOOTSTRAP = 50
BOOTSTRAP_ROWS = 50_000  # per resample: the range costs the same at any N
QUALITY_FLOOR = 1e-6  # the logit of a quality of 0 or 1 is clipped here
EM_ITERATIONS = 200
EM_TOLERANCE = 1e-6  # on the responsibilities
VAR_FLOOR = 1e-3  # x the data's variance, added to each component's (sklearn's reg_covar, made relative)


@dataclass(frozen=True)
class IssueCount:
    estimate: float  # the median of the rules' counts
    low: float  # 5th percentile over bootstrap resamples
    high: float  # 95th
    rules: dict  # rule -> count on all clips

    @property
    def n(self) -> int:
        """The flagged set's size: the estimate, rounded."""
        return int(round(self.estimate))


def mixture_count(quality: np.ndarray) -> int:
    """Clips whose logit label quality is nearer (by posterior) the lower of two Gaussians fitted by EM.

    Qualities at the ceiling (1 - QUALITY_FLOOR: sharp heads round them to 1) are left out of the fit and
    counted as right: as a spike they would pull one component to zero width and leave every other clip low.
    """
    q = np.clip(quality, QUALITY_FLOOR, 1 - QUALITY_FLOOR)
    x = np.log(q / (1 - q))  # (N,)
    x = x[q < 1 - QUALITY_FLOOR]
    if len(x) < 2 or np.ptp(x) < 1e-9:  # one value: nothing stands apart
        return 0
    floor = VAR_FLOOR * x.var()  # relative to the data's spread
    mean = np.array([x.min(), x.max()])
    near_high = np.abs(x - mean[1]) < np.abs(x - mean[0])  # start: each clip with the nearer extreme
    resp = np.stack([~near_high, near_high], 1).astype(np.float64)  # (N, 2)
    for i in range(EM_ITERATIONS):
        weight = resp.sum(0) + 1e-12  # (2,)
        if i:  # the first pass keeps the extremes as means, the assignments only set spreads and weights
            mean = (resp * x[:, None]).sum(0) / weight
        var = (resp * (x[:, None] - mean) ** 2).sum(0) / weight + floor
        log_p = np.log(weight / len(x)) - 0.5 * np.log(2 * np.pi * var) - 0.5 * (x[:, None] - mean) ** 2 / var
        top = log_p.max(1, keepdims=True)
        total = top[:, 0] + np.log(np.exp(log_p - top).sum(1))  # (N,) log-likelihood per clip
        new = np.exp(log_p - total[:, None])
        if i and np.abs(new - resp).max() < EM_TOLERANCE:
            resp = new
            break
        resp = new
    return int((resp[:, int(np.argmin(mean))] > 0.5).sum())


def rule_counts(labels: np.ndarray, probs: np.ndarray, quality: np.ndarray) -> dict:
    """Each rule's count of wrong labels. Tags: cleanlab's multi-label rules of the same names."""
    import warnings

    with warnings.catch_warnings():  # "too few examples in class c": expected in resamples, said for every one
        warnings.simplefilter("ignore", UserWarning)
        return _rule_counts(labels, probs, quality)


def _rule_counts(labels: np.ndarray, probs: np.ndarray, quality: np.ndarray) -> dict:
    from audit.label_issues import PARALLEL_FROM

    n_jobs = 1 if len(labels) < PARALLEL_FROM else None  # as label_issues: a worker pool only pays on large sets
    if labels.ndim == 2:
        from cleanlab.multilabel_classification.filter import find_label_issues as cleanlab_find

        tags = [np.flatnonzero(row).tolist() for row in labels]
        counted = {r: int(cleanlab_find(tags, probs, filter_by=r, n_jobs=n_jobs).sum()) for r in RULES[1:]}
    else:
        from cleanlab.filter import find_label_issues as cleanlab_find

        counted = {r: int(cleanlab_find(labels, probs, filter_by=r, n_jobs=n_jobs).sum()) for r in RULES[1:]}
    return {"mixture": mixture_count(quality), **counted}


def estimate(labels: np.ndarray, probs: np.ndarray, quality: np.ndarray, seed: int = 0,
             bootstrap: int = BOOTSTRAP) -> IssueCount:
    counts = rule_counts(labels, probs, quality)
    n = len(labels)
    rng = np.random.default_rng(seed)
    size = min(n, BOOTSTRAP_ROWS)
    median = float(np.median(list(counts.values())))
    scaled = np.array([np.median(list(rule_counts(labels[rows], probs[rows], quality[rows]).values())) * n / size
                       for rows in (rng.integers(0, n, size) for _ in range(bootstrap))])  # (B,) counts scaled to N
    # A count from `size` rows scaled to N spreads sqrt(N / size) times wider than one from N rows: shrink it back.
    totals = median + (scaled - np.median(scaled)) * np.sqrt(size / n) if bootstrap else np.array([median])
    low, high = np.percentile(totals, [5, 95])
    return IssueCount(estimate=median, low=float(min(low, median)), high=float(max(high, median)), rules=counts)
