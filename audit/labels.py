"""Label cells -> the (N, K) target the heads and cleanlab take: class ids, or multi-hot tag sets.

Notation: N clips, K classes (tags). Single-label: `ids` (N,) class ids. Multi-label (`--multi-label`):
a cell holds tags separated by ';' (`dog;bark;speech`, the AudioSet/lhotse habit); an empty cell is
the empty tag set; `multi_hot` (N, K) holds 1 where a clip has a tag. Classes sort the way people
count ('2' < '10'). The fold rule is the same for both: every class (tag) on at least --folds clips.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from audit.errors import UserError

SEP = ";"


def natural_key(label: str):
    """'2' < '10', 'a2' < 'a10': labels sort the way people count."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", label)]


@dataclass(frozen=True)
class Labels:
    classes: list  # (K,) names; id = position
    target: np.ndarray  # (N,) int64 class ids, or (N, K) int8 multi-hot for multi-label

    @property
    def multi_label(self) -> bool:
        return self.target.ndim == 2

    def strata(self) -> np.ndarray:
        """(N,) a class id per clip for stratified folds: for tag sets, the clip's rarest tag (K for none)."""
        if not self.multi_label:
            return self.target
        counts = self.target.sum(0)  # (K,)
        weight = np.where(self.target > 0, counts[None, :], np.iinfo(np.int64).max)  # (N, K)
        rarest = weight.argmin(1)
        return np.where(self.target.any(1), rarest, len(self.classes))


def encode(cells: pd.Series, multi_label: bool) -> Labels:
    """Labels from the manifest's label column (text)."""
    cells = cells.astype(str)
    if not multi_label:
        with_sep = cells[cells.str.contains(SEP, regex=False)]
        if len(with_sep):
            raise UserError(f"label {with_sep.iloc[0]!r} holds '{SEP}': if clips carry several tags, "
                            "add --multi-label (tags separated by ';')")
        classes = sorted(cells.unique(), key=natural_key)
        return Labels(classes, cells.map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64))
    sets = [sorted({t.strip() for t in cell.split(SEP) if t.strip()}) for cell in cells]
    classes = sorted({t for s in sets for t in s}, key=natural_key)
    index = {c: i for i, c in enumerate(classes)}
    target = np.zeros((len(sets), len(classes)), dtype=np.int8)  # (N, K)
    for n, tags in enumerate(sets):
        target[n, [index[t] for t in tags]] = 1
    return Labels(classes, target)


def as_text(target: np.ndarray, classes: list) -> np.ndarray:
    """Class ids (N,) or multi-hot (N, K) -> (N,) label text, tags joined by ';'."""
    names = np.asarray(classes, dtype=object)
    if target.ndim == 1:
        return names[target]
    return np.array([SEP.join(names[np.flatnonzero(row)]) for row in target], dtype=object)


def check_counts(labels: Labels, n_folds: int, where: str = "") -> None:
    """Every class (tag) needs at least n_folds clips, and there must be two classes to tell apart."""
    where = f" {where}" if where else ""
    counts = labels.target.sum(0) if labels.multi_label else np.bincount(labels.target, minlength=len(labels.classes))
    kind = "tag" if labels.multi_label else "class"
    if len(labels.classes) < (1 if labels.multi_label else 2):
        need = "1 tag" if labels.multi_label else "2 classes"
        raise UserError(f"only {len(labels.classes)} {kind}(es){where}: finding label errors needs at least {need}")
    small = np.flatnonzero(counts < n_folds)
    if len(small):
        k = small[0]
        raise UserError(f"{kind} {labels.classes[k]!r} has {int(counts[k])} clip(s){where}, fewer than --folds "
                        f"{n_folds}: add clips, drop the {kind}, or lower --folds")
