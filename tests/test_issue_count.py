"""The number of wrong labels and the flagged set cut at it (issue_count.py, label_issues.py's `estimate`)."""

import numpy as np
import pytest

from audit import issue_count
from audit.label_issues import find_label_issues, tag_quality


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
    assert set(count.rules) == set(issue_count.CLASS_RULES)
    assert count.estimate == np.median(list(count.rules.values()))


def test_the_wrong_label_bounds_bracket_the_planted_count_and_stay_near_zero_on_clean_labels():
    """Out of fold, a wrong label scores like any clip's other classes: below every threshold, G(t) / F(t) is at
    least the wrong labels, and where the heads are sharp it is close to them (issue_count.wrong_label_bounds)."""
    for flips in (0, 40, 200):
        labels, p, flipped = noisy_probs(flips=flips)
        bounds = issue_count.wrong_label_bounds(labels, p)
        assert bounds["mpe_min"] <= bounds["mpe_tail"]
        assert bounds["mpe_min"] == pytest.approx(flips, rel=0.15, abs=2)
        assert bounds["mpe_tail"] == pytest.approx(flips, rel=0.05, abs=2)
    # weak heads (a clean clip often scores its own class low): the tail bound counts some of those, the
    # minimum over thresholds stays near the truth, and the median lands between them
    labels, p, flipped = noisy_probs(flips=200, sharp=3.0)
    bounds = issue_count.wrong_label_bounds(labels, p)
    assert 0.7 * 200 < bounds["mpe_min"] < 200 < bounds["mpe_tail"] < 1.3 * 200
    count = issue_count.estimate(labels, p, p[np.arange(len(labels)), labels], bootstrap=0)
    assert bounds["mpe_min"] <= count.estimate <= bounds["mpe_tail"]


def test_a_clean_set_counts_next_to_nothing():
    """No wrong labels: the mixture still splits one population in two, the bounds keep the median near zero."""
    labels, p, _ = noisy_probs(flips=0)
    count = issue_count.estimate(labels, p, p[np.arange(len(labels)), labels])
    assert count.rules["mixture"] > 100 and count.flagged <= 2 and count.high <= 5


def test_the_mixture_counts_the_low_group_and_nothing_in_one_value():
    rng = np.random.default_rng(0)
    quality = np.concatenate([rng.uniform(0.001, 0.05, 30), rng.uniform(0.9, 0.999, 970)])
    assert issue_count.mixture_count(quality) == 30
    assert issue_count.mixture_count(np.full(50, 0.7)) == 0


def test_the_mixture_fitted_on_a_histogram_counts_as_an_exact_em_does():
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(1)
    logit = np.concatenate([rng.normal(-3, 1.5, 6_000), rng.normal(4, 2, 114_000)])  # (N,) overlapping groups
    quality = 1 / (1 + np.exp(-logit))
    exact = GaussianMixture(2, means_init=[[-10], [10]], tol=1e-8, random_state=0).fit(logit[:, None])
    low = int(np.argmin(exact.means_[:, 0]))
    expected = int((exact.predict(logit[:, None]) == low).sum())
    assert abs(issue_count.mixture_count(quality) - expected) <= 0.002 * expected


def test_tag_sets_resample_at_most_tag_cells_and_scale_the_range_back(monkeypatch):
    rng = np.random.default_rng(0)
    truth = rng.random((1200, 5)) < 0.3
    p = np.where(truth, rng.uniform(0.6, 0.99, truth.shape), rng.uniform(0.01, 0.4, truth.shape))
    given = truth.copy()
    given[:60, 0] = ~given[:60, 0]  # 60 clips with one tag wrong
    sizes = []
    counts = issue_count.rule_counts

    def spy(labels, probs, quality):
        sizes.append(len(labels))
        return counts(labels, probs, quality)

    monkeypatch.setattr(issue_count, "TAG_CELLS", 2_000)
    monkeypatch.setattr(issue_count, "BOOTSTRAP_MIN_ROWS", 300)
    monkeypatch.setattr(issue_count, "rule_counts", spy)
    quality = tag_quality(given.astype(np.int8), p, "self_confidence")
    c = issue_count.estimate(given.astype(np.int8), p, quality, bootstrap=20)
    assert sizes[0] == 1200 and set(sizes[1:]) == {400}  # 2,000 cells / 5 tags
    assert c.low <= c.estimate <= c.high and 40 <= c.estimate <= 80 and c.high - c.low < 60


def test_flags_are_the_top_of_the_ranking_at_the_estimate():
    labels, p, flipped = noisy_probs(flips=60, sharp=3.0, seed=2)  # a blurrier model: the rules disagree a little
    issues = find_label_issues(labels, p, filter_by="estimate")
    n = issues.count.flagged
    assert issues.flagged.sum() == n > 0
    assert set(issues.order[:n]) == set(np.flatnonzero(issues.flagged))  # the ranking and the flags agree
    assert np.all(np.diff(issues.quality[issues.order]) >= 0)
    assert (issues.flagged & flipped).sum() >= 0.8 * flipped.sum()


def noisy_tags(n: int, k: int, wrong: int, right_p: float, spread: float, seed: int) -> tuple:
    """(given multi-hot (N, K), sigmoid-like probs (N, K), truth (N, K)): one tag wrong or missing on `wrong`
    clips; a tag the clip has scores about right_p, one it lacks 1 - right_p, each +- spread."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, k)) < 0.3).astype(np.int64)
    p = np.clip(truth * (2 * right_p - 1) + (1 - right_p) + rng.normal(0, spread, (n, k)), 0.01, 0.99)
    labels = truth.copy()
    rows = rng.choice(n, wrong, replace=False)
    labels[rows, rng.integers(0, k, wrong)] ^= 1
    return labels, p, truth


def test_tag_sets_get_an_estimate_and_each_flagged_clip_a_changed_tag():
    labels, p, _ = noisy_tags(600, 5, 30, right_p=0.95, spread=0.03, seed=3)
    issues = find_label_issues(labels, p, filter_by="estimate")
    assert issues.count is not None and issues.count.estimate == pytest.approx(30, rel=0.3)
    assert set(issues.count.rules) == set(issue_count.TAG_RULES)
    flagged = np.flatnonzero(issues.flagged)
    assert (issues.suggested[flagged] != labels[flagged]).any(1).all()
    assert not (issues.suggested[~issues.flagged] != labels[~issues.flagged]).any()


def test_the_expected_f1_cut_is_the_estimate_on_a_sharp_ranking_and_stops_short_where_the_tail_is_right_labels():
    """issue_count.expected_f1_cut: wrong labels score like `wrong`. Where they sit apart the cut is the estimate;
    where right labels crowd the scores that most wrong ones would exceed, it ends before them."""
    wrong = np.sort(np.random.default_rng(0).normal(-6, 1, 5000))  # wrong labels' scores
    right = np.random.default_rng(1).normal(4, 1, 950)
    sharp = np.sort(np.r_[np.random.default_rng(2).normal(-6, 1, 50), right])
    assert abs(issue_count.expected_f1_cut(sharp, wrong, 50.0) - 50) <= 2  # F reaches 1 just past the 50
    assert issue_count.expected_f1_cut(sharp, wrong, 60.0) == 60  # sharp: the estimate, even one too high
    blurred = np.sort(np.r_[np.random.default_rng(2).normal(-6, 1, 50), np.random.default_rng(3).normal(-1, 2, 950)])
    k = issue_count.expected_f1_cut(blurred, wrong, 60.0)
    assert 30 <= k < 60  # where right labels crowd the tail, fewer flags than the estimate
    assert issue_count.expected_f1_cut(sharp, wrong, 0.0) == 0
    assert issue_count.expected_f1_cut(sharp, np.empty(0), 7.0) == 7  # nothing to go by: the estimate


def test_a_tag_sets_flags_stop_where_its_wrong_values_end_and_the_line_says_so():
    """Tag sets flag at the best expected F1 (label_issues.cut): the top of the ranking, and the summary line
    gives the estimate and the flagged count when they differ."""
    from audit.label_issues import tag_margins, tag_scores, wrong_tag_margins
    from audit.summary import estimate_record, issues_line

    n, k = 1500, 6
    labels, p, truth = noisy_tags(n, k, 60, right_p=0.9, spread=0.08, seed=4)
    wrong = wrong_tag_margins(p, "self_confidence", tag_scores(labels, p, "self_confidence"))
    margins = tag_margins(labels, p, "self_confidence")
    bad = labels != truth
    assert len(wrong) == n * k and np.all(np.diff(wrong) >= 0)
    # the planted wrong cells' margins look like the sample, not like the right cells'
    assert abs(np.median(margins[bad]) - np.median(wrong)) < 1.0 < np.median(margins[~bad]) - np.median(wrong)
    issues = find_label_issues(labels, p, filter_by="estimate")
    c = issues.count
    assert issues.flagged.sum() == c.flagged and set(issues.order[:c.flagged]) == set(np.flatnonzero(issues.flagged))
    hits = (issues.flagged & bad.any(1)).sum()
    assert hits >= 0.8 * 60 and hits >= 0.8 * c.flagged
    # here cleanlab's counts run short (~50 of 60) and the cut goes on to where the wrong values end
    f1 = 2 * np.cumsum(bad.any(1)[issues.order]) / (np.arange(1, n + 1) + 60)  # (N,) F1 of each top k
    assert f1[c.flagged - 1] >= max(f1[round(c.estimate) - 1], f1.max() - 0.01)
    est = estimate_record(c)
    assert est["rounded"] == round(c.estimate) and est["flagged"] == c.flagged
    summary = {"n_label_issues": 55, "label_issue_estimate": {"estimate": 60.0, "low": 50.0, "high": 70.0,
                                                              "rounded": 60}}
    assert issues_line(summary) == "~60 likely label issues (range 50-70), the 55 most likely flagged"
    assert issues_line({**summary, "n_label_issues": 60}) == "~60 likely label issues (range 50-70)"
    # class labels flag round(61.46) = 61; the record keeps 61.5, which must not be rounded again to 62
    class_est = estimate_record(issue_count.IssueCount(61.46, 50.0, 70.0, {}, flagged=61))
    assert issues_line({"n_label_issues": 61, "label_issue_estimate": class_est}) == \
        "~61 likely label issues (range 50-70)"
