import numpy as np

from audit.rank import rank_issues


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
    table = rank_issues(labels, pred_probs)
    assert set(table.index[:12]) == set(flipped)
    assert table["is_label_issue"].sum() == 12
    assert (table.loc[flipped, "suggested"] == truth[flipped]).all()
    assert table["label_quality"].iloc[12:].is_monotonic_increasing
    assert sorted(table.index) == list(range(n))
