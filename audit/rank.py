"""Out-of-fold probabilities -> ranked label issues, with cleanlab.

Notation: N clips, C classes. `labels` (N,) are given class ids, `pred_probs` (N, C) the
out-of-fold probabilities. cleanlab decides which clips are label issues (`filter_by`) and scores
every clip's label quality (`rank_by`: lower = more likely wrong); the suggested label is the
arg-max of the probabilities.
"""

from __future__ import annotations

import numpy as np

PARALLEL_FROM = 200_000  # clips
# "both" (prune by class and by noise rate) won F1 at 5% and 10% noise on FSDD (bench/RESULTS.md).
DEFAULT_FILTER_BY = "both"
RANK_BY = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
FILTER_BY = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
             "predicted_neq_given", "low_normalized_margin", "low_self_confidence")


def rank_issues(labels: np.ndarray, pred_probs: np.ndarray, *, rank_by: str = "self_confidence",
                filter_by: str = DEFAULT_FILTER_BY) -> "pd.DataFrame":
    """One row per clip (index = clip row), sorted most-likely-error first.

    Columns: given (N,), suggested (N,) class ids, label_quality in [0, 1], is_label_issue.
    Flagged clips come first in cleanlab's ranking, then the rest by ascending quality.
    """
    import pandas as pd  # here, not at the top: cli.py reads RANK_BY for --help, which stays fast
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    assert rank_by in RANK_BY and filter_by in FILTER_BY, (rank_by, filter_by)
    assert np.allclose(pred_probs.sum(1), 1.0), "pred_probs rows must sum to 1"
    quality = get_label_quality_scores(labels, pred_probs, method=rank_by)  # (N,)
    # cleanlab's worker pool costs ~1.5 s to start: worth it only on large data.
    n_jobs = 1 if len(labels) < PARALLEL_FROM else None
    ranked = find_label_issues(labels, pred_probs, filter_by=filter_by, return_indices_ranked_by=rank_by,
                               n_jobs=n_jobs)
    flagged = np.zeros(len(labels), dtype=bool)
    flagged[ranked] = True
    # The rest by quality; ties broken by row so the order never depends on the sort's stability.
    rest = np.flatnonzero(~flagged)
    rest = rest[np.lexsort((rest, quality[rest]))]
    order = np.concatenate([ranked, rest]).astype(np.int64)
    table = pd.DataFrame({
        "given": labels[order],
        "suggested": pred_probs[order].argmax(1),
        "label_quality": quality[order],
        "is_label_issue": flagged[order],
    }, index=pd.Index(order, name="row"))
    return table
