import numpy as np

from audit.label_issues import find_label_issues


def test_injected_errors_rank_first_and_suggest_the_true_class():
    rng = np.random.default_rng(0)
    n, k = 300, 3
    truth = rng.integers(0, k, n)
    pred_probs = np.full((n, k), 0.05)
    pred_probs[np.arange(n), truth] = 0.9
    pred_probs /= pred_probs.sum(1, keepdims=True)
    labels = truth.copy()
    flipped = rng.choice(n, 12, replace=False)
    labels[flipped] = (truth[flipped] + 1) % k
    issues = find_label_issues(labels, pred_probs)
    assert set(issues.order[:12]) == set(flipped)
    assert issues.flagged.sum() == 12 and set(np.flatnonzero(issues.flagged)) == set(flipped)
    assert (issues.suggested[flipped] == truth[flipped]).all()
    assert np.all(np.diff(issues.quality[issues.order[12:]]) >= 0)
    assert sorted(issues.order) == list(range(n))
