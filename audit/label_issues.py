"""Out-of-fold probabilities -> label issues, with cleanlab.

Notation: N clips, K classes. `labels` (N,) are given class ids, `pred_probs` (N, K) the
out-of-fold probabilities. cleanlab decides which clips are label issues (`filter_by`) and scores
every clip's label quality (`rank_by`: lower = more likely wrong); the suggested label is the
arg-max of the probabilities. Results stay in row order; `order` says how to show them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.options import DEFAULT_FILTER_BY, FILTER_BY, RANK_BY

PARALLEL_FROM = 200_000  # clips: cleanlab's worker pool costs ~1.5 s to start, worth it only on large data


@dataclass(frozen=True)
class LabelIssues:
    quality: np.ndarray  # (N,) label quality in [0, 1], lower = more likely wrong
    flagged: np.ndarray  # (N,) bool: cleanlab calls the given label an issue
    suggested: np.ndarray  # (N,) class id the probabilities favour
    order: np.ndarray  # (N,) rows, most likely error first: flagged in cleanlab's ranking, then by quality


def find_label_issues(labels: np.ndarray, pred_probs: np.ndarray, *, rank_by: str = "self_confidence",
                      filter_by: str = DEFAULT_FILTER_BY) -> LabelIssues:
    from cleanlab.filter import find_label_issues as cleanlab_find
    from cleanlab.rank import get_label_quality_scores

    assert rank_by in RANK_BY and filter_by in FILTER_BY, (rank_by, filter_by)
    assert np.allclose(pred_probs.sum(1), 1.0), "pred_probs rows must sum to 1"
    quality = get_label_quality_scores(labels, pred_probs, method=rank_by)  # (N,)
    n_jobs = 1 if len(labels) < PARALLEL_FROM else None
    ranked = cleanlab_find(labels, pred_probs, filter_by=filter_by, return_indices_ranked_by=rank_by,
                           n_jobs=n_jobs)  # (n_flagged,)
    flagged = np.zeros(len(labels), dtype=bool)
    flagged[ranked] = True
    # The rest by quality; ties broken by row so the order never depends on the sort's stability.
    rest = np.flatnonzero(~flagged)
    rest = rest[np.lexsort((rest, quality[rest]))]
    return LabelIssues(quality=quality, flagged=flagged, suggested=pred_probs.argmax(1),
                       order=np.concatenate([ranked, rest]).astype(np.int64))
