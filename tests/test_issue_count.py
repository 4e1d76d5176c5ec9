"""The number of wrong labels and the flagged set cut at it (issue_count.py, label_issues.py's `estimate`)."""

import numpy as np
import pytest

from audit import issue_count
from audit.label_issues import find_label_issues


def noisy_probs(n=2000, k=8, flips=100, sharp=6.0, seed=0):
    """(given labels, out-of-fold-like probs, flipped mask): a model that believes the true class."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    z = rng.normal(0, 1, (n, k))
    z[np.arange(n), truth] += sharp
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = truth.copy()
    rows = rng.choice(n, flips, replace=False)
    labels[rows] = (truth[rows] + rng.integers(1, k, flips)) % k
    return labels, p, labels != truth


@pytest.mark.parametrize("flips", [40, 200])
def test_the_estimate_finds_the_planted_count_and_its_range_holds_it(flips):
    labels, p, flipped = noisy_probs(flips=flips)
    quality = p[np.arange(len(labels)), labels]
    count = issue_count.estimate(labels, p, quality)
    assert count.estimate == pytest.approx(flips, rel=0.1)
    assert count.low <= flips <= count.high and count.low < count.estimate < count.high
    assert set(count.rules) == set(issue_count.RULES)
    assert count.estimate == np.median(list(count.rules.values()))


def test_the_mixture_counts_the_low_group_and_nothing_in_one_value():
    rng = np.random.default_rng(0)
    quality = np.concatenate([rng.uniform(0.001, 0.05, 30), rng.uniform(0.9, 0.999, 970)])
    assert issue_count.mixture_count(quality) == 30
    assert issue_count.mixture_count(np.full(50, 0.7)) == 0


def test_flags_are_the_top_of_the_ranking_at_the_estimate():
    labels, p, flipped = noisy_probs(flips=60, sharp=3.0, seed=2)  # a blurrier model: the rules disagree a little
    issues = find_label_issues(labels, p, filter_by="estimate")
    n = issues.count.n
    assert issues.flagged.sum() == n > 0
    assert set(issues.order[:n]) == set(np.flatnonzero(issues.flagged))  # the ranking and the flags agree
    assert np.all(np.diff(issues.quality[issues.order]) >= 0)
    assert (issues.flagged & flipped).sum() >= 0.8 * flipped.sum()


def test_tag_sets_get_an_estimate_and_each_flagged_clip_a_changed_tag():
    rng = np.random.default_rng(3)
    n, k = 600, 5
    truth = (rng.random((n, k)) < 0.3).astype(np.int64)
    p = np.clip(truth * 0.9 + 0.05 + rng.normal(0, 0.03, (n, k)), 0.01, 0.99)
    labels = truth.copy()
    rows = rng.choice(n, 30, replace=False)
    labels[rows, rng.integers(0, k, 30)] ^= 1  # one tag wrong or missing on 30 clips
    issues = find_label_issues(labels, p, filter_by="estimate")
    assert issues.count is not None and issues.count.estimate == pytest.approx(30, rel=0.3)
    flagged = np.flatnonzero(issues.flagged)
    assert (issues.suggested[flagged] != labels[flagged]).any(1).all()
    assert not (issues.suggested[~issues.flagged] != labels[~issues.flagged]).any()
