import numpy as np

from audit.label_issues import find_label_issues
from audit.options import DEFAULT_FILTER_BY
from synthetic_set import clusters, write_set


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
    issues = find_label_issues(labels, pred_probs, filter_by=DEFAULT_FILTER_BY)
    assert set(issues.order[:12]) == set(flipped)
    assert issues.flagged.sum() == 12 and set(np.flatnonzero(issues.flagged)) == set(flipped)
    assert (issues.suggested[flipped] == truth[flipped]).all()
    assert np.all(np.diff(issues.quality[issues.order[12:]]) >= 0)
    assert sorted(issues.order) == list(range(n))


def test_rank_by_and_filter_by_reach_cleanlab_through_a_run(tmp_path):
    """Non-default --rank-by and --filter-by, from the API to the tables: each is cleanlab's method of that name,
    on data where they differ from the defaults."""
    import audit
    from cleanlab.rank import get_label_quality_scores

    emb, labels = clusters([40, 40, 40, 40], dim=8, spread=3.0)  # overlapping classes: the heads disagree often
    manifest, npy = write_set(tmp_path / "set", emb, labels)
    result = audit.run(manifest, embeddings=npy, devices=1, progress=False, rank_by="normalized_margin",
                       filter_by="predicted_neq_given")
    scores = result.scores.set_index("row").sort_index()  # back to row order
    probs, given = result.pred_probs, labels
    np.testing.assert_allclose(scores["label_quality"], get_label_quality_scores(given, probs, method="normalized_margin"),
                               rtol=1e-6)
    assert not np.allclose(scores["label_quality"], get_label_quality_scores(given, probs, method="self_confidence"))
    flagged = scores["is_label_issue"].to_numpy()
    assert (flagged == (probs.argmax(1) != given)).all() and flagged.any()  # predicted_neq_given, by its definition
    default = find_label_issues(given, probs, filter_by=DEFAULT_FILTER_BY).flagged
    assert (flagged != default).any()  # the default rule would have flagged other clips here
    assert result.summary["options"]["rank_by"] == "normalized_margin"
