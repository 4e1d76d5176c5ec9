"""Out-of-fold probabilities -> label issues, with cleanlab.

Notation: N clips, K classes. `labels` (N,) are given class ids, `pred_probs` (N, K) the
out-of-fold probabilities. cleanlab decides which clips are label issues (`filter_by`) and scores
every clip's label quality (`rank_by`: lower = more likely wrong); the suggested label is the
arg-max of the probabilities. Results stay in row order; `order` says how to show them.

Multi-label (`labels` (N, K) multi-hot, `pred_probs` (N, K) one sigmoid per tag): cleanlab's
multilabel_classification module flags and scores the clips, and its per-class issues say which tag
looks missing (given 0) and which looks wrong (given 1); the suggested tag set flips exactly those.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.options import DEFAULT_RANK_BY, FILTER_BY, RANK_BY

PARALLEL_FROM = 200_000  # clips: cleanlab's worker pool costs ~1.5 s to start, worth it only on large data


@dataclass(frozen=True)
class LabelIssues:
    quality: np.ndarray  # (N,) label quality in [0, 1], lower = more likely wrong
    flagged: np.ndarray  # (N,) bool: cleanlab calls the given label an issue
    suggested: np.ndarray  # (N,) class id the probabilities favour; (N, K) multi-hot tag set for multi-label
    order: np.ndarray  # (N,) rows, most likely error first: flagged in cleanlab's ranking, then by quality
    missing: np.ndarray | None = None  # (N, K) bool, multi-label: a tag that looks missing
    extra: np.ndarray | None = None  # (N, K) bool, multi-label: a given tag that looks wrong


def find_label_issues(labels: np.ndarray, pred_probs: np.ndarray, *, filter_by: str,
                      rank_by: str = DEFAULT_RANK_BY) -> LabelIssues:
    """`filter_by` as resolved by RunOptions.resolve (its default depends on the task: options.task_defaults)."""
    assert rank_by in RANK_BY and filter_by in FILTER_BY, (rank_by, filter_by)
    if labels.ndim == 2:
        return _multi_label(labels, pred_probs, rank_by, filter_by)
    from cleanlab.filter import find_label_issues as cleanlab_find
    from cleanlab.rank import get_label_quality_scores

    assert np.allclose(pred_probs.sum(1), 1.0), "pred_probs rows must sum to 1"
    quality = get_label_quality_scores(labels, pred_probs, method=rank_by)  # (N,)
    n_jobs = 1 if len(labels) < PARALLEL_FROM else None
    ranked = cleanlab_find(labels, pred_probs, filter_by=filter_by, return_indices_ranked_by=rank_by,
                           n_jobs=n_jobs)  # (n_flagged,)
    return LabelIssues(quality=quality, flagged=_mask(ranked, len(labels)), suggested=pred_probs.argmax(1),
                       order=_order(ranked, quality))


def _multi_label(labels: np.ndarray, pred_probs: np.ndarray, rank_by: str, filter_by: str) -> LabelIssues:
    from cleanlab.multilabel_classification.filter import find_label_issues as cleanlab_find
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    tag_lists = [np.flatnonzero(row).tolist() for row in labels]
    n_jobs = 1 if len(labels) < PARALLEL_FROM else None
    # A clip's quality is its worst tag's (softmin over tags, not cleanlab's default moving average): one
    # wrong or missing tag among right ones is the defect; AP +0.02-0.08 on both multi-label sets.
    quality = get_label_quality_scores(tag_lists, pred_probs, method=rank_by,
                                       aggregator_kwargs={"method": "softmin"})  # (N,)
    flagged = cleanlab_find(tag_lists, pred_probs, filter_by=filter_by, n_jobs=n_jobs)  # (N,) bool
    ranked = np.flatnonzero(flagged)
    ranked = ranked[np.lexsort((ranked, quality[ranked]))]  # (n_flagged,) worst first
    per_tag = np.asarray(find_multilabel_issues_per_class(tag_lists, pred_probs, filter_by=filter_by, n_jobs=n_jobs),
                         dtype=bool)  # (N, K) bool: this tag looks wrongly given or wrongly left out
    if per_tag.shape != labels.shape:  # some cleanlab versions give a list of K masks (N,)
        per_tag = per_tag.T
    given = labels.astype(bool)
    return LabelIssues(quality=quality, flagged=_mask(ranked, len(labels)), suggested=(given ^ per_tag).astype(np.int8),
                       order=_order(ranked, quality), missing=per_tag & ~given, extra=per_tag & given)


def _mask(rows: np.ndarray, n: int) -> np.ndarray:
    flagged = np.zeros(n, dtype=bool)
    flagged[rows] = True
    return flagged


def _order(ranked: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Flagged rows in cleanlab's order, then the rest by quality (ties by row: stable across sorts)."""
    rest = np.flatnonzero(~_mask(ranked, len(quality)))
    rest = rest[np.lexsort((rest, quality[rest]))]
    return np.concatenate([ranked, rest]).astype(np.int64)
