"""Out-of-fold probabilities -> label issues, with cleanlab.

Notation: N clips, K classes. `labels` (N,) are given class ids, `pred_probs` (N, K) the
out-of-fold probabilities. cleanlab scores every clip's label quality (`rank_by`: lower = more likely
wrong). Which clips are flagged (`filter_by`):
  estimate  (the default) the top of that ranking, as many clips as issue_count.py estimates are
            mislabelled: the ranking and the flags never disagree, and the flagged set's size is the
            estimate a user quotes, with its range (`count`); tag sets: the size with the best expected
            F1 at that estimate, within its range (`cut`);
  any other value: cleanlab's find_label_issues rule of that name.
The suggested label is the arg-max of the probabilities. Results stay in row order; `order` says how
to show them.

Multi-label (`labels` (N, K) multi-hot, `pred_probs` (N, K) one sigmoid per tag): cleanlab's
multilabel_classification module scores each (clip, tag), a clip's quality is its worst tag's score
against that tag's typical one (tag_quality; cleanlab's own flags, for a cleanlab `filter_by`), and
its per-class issues say which tag looks missing (given 0) and which looks wrong (given 1); the
suggested tag set flips exactly those (with `estimate`: at least its worst tag, the lowest tag_margins).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from audit.options import DEFAULT_RANK_BY, ESTIMATE, FILTER_BY, RANK_BY, TAG_ISSUES_FILTER_BY

TAG_PRIOR_CLIPS = 5  # tag_margins: a tag's bar: its other clips' mean score and this many at the pooled mean
PARALLEL_FROM = 200_000  # clips: cleanlab's worker pool costs ~1.5 s to start, worth it only on large data


@dataclass(frozen=True)
class LabelIssues:
    quality: np.ndarray  # (N,) label quality in [0, 1], lower = more likely wrong
    flagged: np.ndarray  # (N,) bool: the given label is flagged as an issue (filter_by's rule)
    suggested: np.ndarray  # (N,) class id the probabilities favour; (N, K) multi-hot tag set for multi-label
    order: np.ndarray  # (N,) rows, most likely error first: the flagged ones, then the rest by quality
    missing: np.ndarray | None = None  # (N, K) bool, multi-label: a tag that looks missing
    extra: np.ndarray | None = None  # (N, K) bool, multi-label: a given tag that looks wrong
    count: object = None  # issue_count.IssueCount with filter_by "estimate": the estimate, its range, each rule's count


def cut(quality: np.ndarray, labels: np.ndarray, pred_probs: np.ndarray, seed: int = 0,
        worst: np.ndarray | None = None, wrong: np.ndarray | None = None):
    """(order (N,), flagged (N,) bool, IssueCount): the top of the quality ranking, as many clips as estimated.

    Tag sets (`worst` (N,): worst_tag_margin, the margin `quality` is the sigmoid of; `wrong` (M,):
    wrong_tag_margins): as many as issue_count.expected_f1_cut says, within the estimate's range. Their count
    runs 1.02-1.12x the corrupted clips, and the clips at the end of that cut are mostly right ones; the cut at
    the best expected F1 took the gap to the best cut of the ranking from 0.013-0.051 to 0.008-0.034 per block
    of 3 repeats, about the true count's (two tag sets, 9 repeats: bench/RESULTS.md). Class labels keep the
    estimate: there the same rule cut confusable flips short (their wrong labels score higher than F: ESC-50
    0.033 -> 0.059).
    """
    from audit import issue_count

    count = issue_count.estimate(labels, pred_probs, quality, seed=seed)
    order = np.lexsort((np.arange(len(quality)), quality)).astype(np.int64)  # most likely error first
    if wrong is not None:
        size = issue_count.expected_f1_cut(worst[order], wrong, count.estimate)
        count = replace(count, flagged=int(np.clip(size, np.floor(count.low), np.ceil(count.high))))
    return order, _mask(order[:count.flagged], len(quality)), count


def find_label_issues(labels: np.ndarray, pred_probs: np.ndarray, *, filter_by: str,
                      rank_by: str = DEFAULT_RANK_BY, seed: int = 0) -> LabelIssues:
    """`filter_by` as resolved by RunOptions.resolve (options.task_defaults)."""
    assert rank_by in RANK_BY and filter_by in FILTER_BY, (rank_by, filter_by)
    if labels.ndim == 2:
        return _multi_label(labels, pred_probs, rank_by, filter_by, seed)
    from cleanlab.filter import find_label_issues as cleanlab_find
    from cleanlab.rank import get_label_quality_scores

    assert np.allclose(pred_probs.sum(1), 1.0), "pred_probs rows must sum to 1"
    quality = get_label_quality_scores(labels, pred_probs, method=rank_by)  # (N,)
    if filter_by == ESTIMATE:
        order, flagged, count = cut(quality, labels, pred_probs, seed)
        return LabelIssues(quality=quality, flagged=flagged, suggested=pred_probs.argmax(1), order=order, count=count)
    n_jobs = 1 if len(labels) < PARALLEL_FROM else None
    ranked = cleanlab_find(labels, pred_probs, filter_by=filter_by, return_indices_ranked_by=rank_by,
                           n_jobs=n_jobs)  # (n_flagged,)
    return LabelIssues(quality=quality, flagged=_mask(ranked, len(labels)), suggested=pred_probs.argmax(1),
                       order=_order(ranked, quality))


def _multi_label(labels: np.ndarray, pred_probs: np.ndarray, rank_by: str, filter_by: str, seed: int) -> LabelIssues:
    from cleanlab.multilabel_classification.filter import find_label_issues as cleanlab_find
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class

    tags = cleanlab_tags(labels)  # once: at 1M clips x 10 tags the lists take ~3 s
    varying, tag_lists, n_jobs = tags
    scored = tag_scores(labels, pred_probs, rank_by, tags)  # once: the margins and the cut share it
    margins = tag_margins(labels, pred_probs, rank_by, scored=scored)  # (N, K)
    quality = worst_tag_quality(margins)  # (N,)
    given = labels.astype(bool)
    count = None
    if filter_by == ESTIMATE:
        order, flagged, count = cut(quality, labels, pred_probs, seed, worst=worst_tag_margin(margins),
                                    wrong=wrong_tag_margins(pred_probs, rank_by, scored))
    else:
        flagged = np.zeros(len(labels), bool)
        if varying.any():
            flagged = cleanlab_find(tag_lists, pred_probs[:, varying], filter_by=filter_by, n_jobs=n_jobs)  # (N,)
        ranked = np.flatnonzero(flagged)
        order = _order(ranked[np.lexsort((ranked, quality[ranked]))], quality)  # flagged worst first, then the rest
    # (N, K) bool: this tag looks wrongly given or wrongly left out (with the estimate: confident learning's view)
    per_tag = np.zeros(labels.shape, bool)
    if varying.any():
        per_tag[:, varying] = by_clip(find_multilabel_issues_per_class(
            tag_lists, pred_probs[:, varying], filter_by=TAG_ISSUES_FILTER_BY if filter_by == ESTIMATE else filter_by,
            n_jobs=n_jobs))
    if filter_by == ESTIMATE:  # a flagged clip's suggestion changes at least its worst tag (the one it ranks by)
        per_tag &= flagged[:, None]
        none = flagged & ~per_tag.any(1)
        per_tag[none] = worst_tag_mask(margins[none])
    return LabelIssues(quality=quality, flagged=flagged, suggested=(given ^ per_tag).astype(np.int8),
                       order=order, missing=per_tag & ~given, extra=per_tag & given, count=count)


def cleanlab_tags(labels: np.ndarray) -> tuple:
    """What cleanlab's multi-label calls get for multi-hot `labels` (N, K): (varying (K,) bool: the tags some
    clips carry and some do not, since cleanlab refuses a tag on every clip or on none, which tells nothing
    apart; each clip's list of those tags, numbered among them; the worker count)."""
    present = labels.astype(bool)
    varying = present.any(0) & ~present.all(0)  # (K,)
    tag_lists = [np.flatnonzero(row).tolist() for row in present[:, varying]]
    return varying, tag_lists, 1 if len(labels) < PARALLEL_FROM else None  # a pool only pays on large sets


def by_clip(per_class) -> np.ndarray:
    """cleanlab's per-class output as (N, K): some versions give a list of K arrays (N,)."""
    out = np.stack(per_class, 1) if isinstance(per_class, list) else np.asarray(per_class)
    assert out.ndim == 2, out.shape
    return out


@dataclass(frozen=True)
class TagScores:
    """cleanlab's score of every (clip, tag) of a tag set and its (given value, tag) groups: what tag_margins
    and wrong_tag_margins share. V: the tags that vary (cleanlab_tags)."""
    varying: np.ndarray  # (K,) bool
    scores: np.ndarray  # (N, V) float64, `rank_by` of each (clip, tag) with its given value
    given: np.ndarray  # (N, V) bool
    sums: np.ndarray  # (2, V) each group's summed score: row 0 for the tag not given, row 1 for given
    counts: np.ndarray  # (2, V) each group's clips
    prior: np.ndarray  # (2,) the mean score of every (clip, tag) with that value


def tag_scores(labels: np.ndarray, pred_probs: np.ndarray, rank_by: str, tags: tuple | None = None) -> TagScores:
    """TagScores of multi-hot `labels` (N, K); `tags`: cleanlab_tags(labels), if the caller has it already."""
    varying, tag_lists, _ = cleanlab_tags(labels) if tags is None else tags
    given = labels[:, varying].astype(bool)  # (N, V)
    scores = _per_tag_scores(tag_lists, pred_probs[:, varying], rank_by) if varying.any() else np.empty(given.shape)
    sums = np.stack([np.where(given == v, scores, 0.0).sum(0) for v in (False, True)])
    counts = np.stack([(given == v).sum(0) for v in (False, True)]).astype(np.float64)
    prior = sums.sum(1) / np.maximum(counts.sum(1), 1)
    return TagScores(varying, scores, given, sums, counts, prior)


def tag_margins(labels: np.ndarray, pred_probs: np.ndarray, rank_by: str, tags: tuple | None = None,
                scored: TagScores | None = None) -> np.ndarray:
    """(N, K) float32: each (clip, tag) score against the clips sharing that tag and given value, in log-odds;
    +inf for a tag on every clip or on none (nothing to compare it with). `scored`: tag_scores(labels,
    pred_probs, rank_by), if the caller has it already.

    cleanlab scores every (clip, tag) pair with `rank_by` (self_confidence: p where the tag is given, 1 - p
    where it is not). The heads are sure of some tags and unsure of others, so a raw score compares unlike
    things: a clean clip of a hard tag can score below a sure tag's clear error. Each score is therefore
    taken in log-odds minus the log-odds of the mean score of the other clips with the same tag and given
    value (confident learning's per-class threshold, leaving the clip out so that a rare tag's lone error
    cannot set its own bar), that mean shrunk by TAG_PRIOR_CLIPS clips towards the mean score of every
    (clip, tag) with that given value (a tag on two clips has a bar too). Against cleanlab's softmin of the
    raw scores (audit's ranking until 2026-12-03) on the two tag sets, 5% and 10% corrupted, 3 repeats
    (bench/RESULTS.md): AP 0.862 -> 0.966 on spoken-word mixtures and 0.954 -> 0.968 on digit mixtures.
    """
    t = tag_scores(labels, pred_probs, rank_by, tags) if scored is None else scored
    margins = np.full(labels.shape, np.inf, np.float32)
    if not t.varying.any():
        return margins
    from audit.issue_count import log_odds

    value, group = t.given.astype(np.intp), np.arange(t.scores.shape[1])
    others = t.sums[value, group] - t.scores  # (N, V) the rest of each clip's group
    bar = (others + TAG_PRIOR_CLIPS * t.prior[value]) / (t.counts[value, group] - 1 + TAG_PRIOR_CLIPS)
    margins[:, t.varying] = log_odds(t.scores) - log_odds(bar)
    return margins


def wrong_tag_margins(pred_probs: np.ndarray, rank_by: str, scored: TagScores) -> np.ndarray:
    """(M,) sorted: the tag_margins that wrong values would have, a sample of them.

    Out of fold, a (clip, tag) given the wrong value v scores what the heads give v on a clip whose value is
    not v; the clips given the other value (nearly all right) sample that. So each cell's score with its value
    flipped, against the bar of the group it would then join (that tag and value, TAG_PRIOR_CLIPS shrinkage
    as in tag_margins), is a wrong value's margin. Every s-th clip's cells, at most issue_count.WRONG_VALUES,
    each counted once: most cells are a tag not given, so a wrongly added tag's margin dominates the sample,
    whatever share of the real errors are added tags (measured with half of them dropped tags, and with
    confusable ones: bench/RESULTS.md).
    """
    t = scored
    if not t.varying.any():
        return np.empty(0)
    from audit.issue_count import WRONG_VALUES, log_odds

    rows = np.arange(0, len(t.given), max(1, -(-t.given.size // WRONG_VALUES)))  # every s-th clip
    flipped = ~t.given[rows]  # (n, V)
    scores = _per_tag_scores([np.flatnonzero(row).tolist() for row in flipped], pred_probs[rows][:, t.varying],
                             rank_by)
    value, group = flipped.astype(np.intp), np.arange(scores.shape[1])
    bar = (t.sums[value, group] + TAG_PRIOR_CLIPS * t.prior[value]) / (t.counts[value, group] + TAG_PRIOR_CLIPS)
    return np.sort((log_odds(scores) - log_odds(bar)).ravel())


def _per_tag_scores(tag_lists: list, probs: np.ndarray, rank_by: str) -> np.ndarray:
    """(N, V) cleanlab's score of each (clip, tag) for the tag lists given (tags numbered among the V)."""
    from cleanlab.multilabel_classification.rank import get_label_quality_scores_per_class

    scores = by_clip(get_label_quality_scores_per_class(tag_lists, probs, method=rank_by)).astype(np.float64)
    assert scores.shape == probs.shape, scores.shape
    return scores


def worst_tag_margin(margins: np.ndarray) -> np.ndarray:
    """(N,) float64: each clip's lowest tag margin (within +-28), 0 where no tag varies."""
    return np.where(np.isfinite(margins).any(1), margins.min(1), 0.0).astype(np.float64)


def worst_tag_mask(margins: np.ndarray) -> np.ndarray:
    """(n, K) bool: each clip's worst tag (its lowest margin: the tag that ranks it), none where no tag varies."""
    mask = np.zeros(margins.shape, bool)
    some = np.isfinite(margins).any(1)
    mask[np.flatnonzero(some), margins[some].argmin(1)] = True
    return mask


def worst_tag_quality(margins: np.ndarray) -> np.ndarray:
    """(N,) in (0, 1): the sigmoid of each clip's lowest tag margin (0.5: its worst tag scores at its bar; above:
    every tag above; 0.5 too where no tag varies)."""
    return 1.0 / (1.0 + np.exp(-worst_tag_margin(margins)))  # not clipped: the clearest errors keep their order


def tag_quality(labels: np.ndarray, pred_probs: np.ndarray, rank_by: str) -> np.ndarray:
    """(N,) a tag set's label quality: its worst tag's (tag_margins, worst_tag_quality)."""
    return worst_tag_quality(tag_margins(labels, pred_probs, rank_by))


def _mask(rows: np.ndarray, n: int) -> np.ndarray:
    flagged = np.zeros(n, dtype=bool)
    flagged[rows] = True
    return flagged


def _order(ranked: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Flagged rows in cleanlab's order, then the rest by quality (ties by row: stable across sorts)."""
    rest = np.flatnonzero(~_mask(ranked, len(quality)))
    rest = rest[np.lexsort((rest, quality[rest]))]
    return np.concatenate([ranked, rest]).astype(np.int64)
