"""The files in --out, each written atomically (temp file + rename); summary.json's record and the terminal
summary are summary.py's.

    issues.csv      flagged clips, most likely error first
    scores.csv      every clip, same columns, most likely error first
    pred_probs.npy  (N, C) out-of-fold probabilities, rows in manifest order; classes.json names C
    skipped.csv     path, reason: every clip that could not be used
    summary.json    counts, CV accuracy, seconds per stage, encoder, versions, seed, every option
    outliers.csv    clips unlike their class or the dataset, most unusual first (cleanlab Datalab)
    duplicates.csv  groups of identical (same bytes) or near-identical (embedding) clips
    class_imbalance.csv, data_issues.csv   per-class counts; Datalab's summary of every issue type
    map.csv         row, path, file, x, y: a 2-D PCA map of the embeddings (the report draws it)
    audio_issues.csv  path, type, value, threshold, row: audio-health problems (health.py)
    embeddings.parquet  path, embedding: reusable with --embeddings (written by api.py)
    report.html     the page to review issues in (see report/)
    cache/          the embedding cache (see cache.py)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from audit.errors import UserError

MARKER = ".audit-output"  # tells a folder audit wrote from a user's folder it must not clobber
FLOAT_FORMAT = "%.6g"  # 6 significant digits: stable across BLAS builds, plenty to rank by


# Column types of the tables audit writes: the one reader (read_run) restores them.
INT_COLUMNS = ("rank", "row", "group", "n_clips", "n_label_issues", "num_issues")
FLOAT_COLUMNS = ("label_quality", "given_prob", "suggested_prob", "x", "y", "outlier_score", "near_duplicate_score",
                 "share", "issue_rate", "score", "value", "threshold")
BOOL_COLUMNS = ("is_label_issue", "is_outlier_issue")
RUN_FILES = ("summary.json", "classes.json", "pred_probs.npy", "scores.csv", "map.csv", "skipped.csv",
             "class_imbalance.csv", "duplicates.csv", "data_issues.csv", "audio_issues.csv")


@dataclass(frozen=True)
class RunFiles:
    """An output folder read back: what `audit report` and a test see of a finished run."""

    summary: dict
    classes: list  # (K,)
    pred_probs: np.ndarray  # (N, K)
    scores: pd.DataFrame  # every clip, most likely error first (scores.csv)
    clip_map: pd.DataFrame  # (N rows) row, path, file, x, y (map.csv)
    skipped: pd.DataFrame
    class_imbalance: pd.DataFrame
    duplicates: pd.DataFrame
    outliers: pd.DataFrame  # empty when Datalab found no outlier type
    data_issues: pd.DataFrame  # Datalab's summary per issue type
    audio_issues: pd.DataFrame  # path, type, value, threshold, row (audio_issues.csv)


def read_run(out: Path) -> RunFiles:
    """The one reader of an output folder; a folder that is not one is a UserError."""
    out = Path(out)
    missing = [n for n in RUN_FILES if not (out / n).is_file()]
    if missing:
        raise UserError(f"{out}: not an audit output folder (missing {', '.join(missing)})")
    return RunFiles(
        summary=json.loads((out / "summary.json").read_text()),
        classes=json.loads((out / "classes.json").read_text())["classes"],
        pred_probs=np.load(out / "pred_probs.npy", allow_pickle=False),
        scores=read_csv(out / "scores.csv"), clip_map=read_csv(out / "map.csv"), skipped=read_csv(out / "skipped.csv"),
        class_imbalance=read_csv(out / "class_imbalance.csv"), duplicates=read_csv(out / "duplicates.csv"),
        outliers=read_csv(out / "outliers.csv") if (out / "outliers.csv").is_file() else pd.DataFrame(),
        data_issues=read_csv(out / "data_issues.csv"), audio_issues=read_csv(out / "audio_issues.csv"))


def read_csv(path: Path) -> pd.DataFrame:
    """A table audit wrote, with its column types restored (labels and paths stay text)."""
    table = pd.read_csv(path, keep_default_na=False, dtype=str)
    for col in table.columns:
        if col in INT_COLUMNS:
            table[col] = table[col].astype(np.int64)
        elif col in FLOAT_COLUMNS:
            table[col] = pd.to_numeric(table[col], errors="coerce").astype(np.float64)
        elif col in BOOL_COLUMNS:
            table[col] = table[col].map({"True": True, "False": False}).astype(bool)
    return table


def prepare_out(out: Path) -> None:
    """Creates --out, or refuses a file or a non-empty folder that is not an earlier audit output."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(f"--out {out}: a non-empty folder that is not an audit output; choose a new or empty folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).touch()
    except OSError as e:
        raise UserError(f"--out {out}: cannot create it ({e.strerror})") from None


def issue_table(result) -> pd.DataFrame:
    """Every clip, most likely error first: path, given/suggested label, quality, flag, extras."""
    if result.data.multi_label:
        return _tag_table(result)
    data, issues = result.data, result.issues
    order = issues.order  # (N,)
    classes = np.asarray(data.classes, dtype=object)
    given, suggested = data.labels[order], issues.suggested[order]  # (N,)
    probs = result.pred_probs[order]  # (N, K) in ranked order
    rows = np.arange(len(order))
    table = pd.DataFrame({
        "rank": rows + 1,
        "path": data.clips["path"].to_numpy()[order],
        "given_label": classes[given],
        "suggested_label": classes[suggested],
        "label_quality": issues.quality[order],
        "is_label_issue": issues.flagged[order],
        "given_prob": probs[rows, given],
        "suggested_prob": probs[rows, suggested],
        "row": order,  # this clip's row in pred_probs.npy and map.csv
    })
    extras = data.clips.drop(columns=["path", "label"]).iloc[order].reset_index(drop=True)
    return pd.concat([table, extras], axis=1)


def run_files(result, summary: dict) -> RunFiles:
    """Every table of the output folder, in memory: what write_outputs writes and read_run reads back."""
    data = result.data
    tables = data_issue_tables(result)
    return RunFiles(
        summary=summary, classes=list(data.classes), pred_probs=result.pred_probs, scores=issue_table(result),
        clip_map=pd.DataFrame({"row": np.arange(len(data.clips)), "path": data.clips["path"], "file": data.files,
                               "x": result.map_2d[:, 0], "y": result.map_2d[:, 1]}),
        skipped=data.skipped, class_imbalance=tables["class_imbalance.csv"], duplicates=tables["duplicates.csv"],
        outliers=tables.get("outliers.csv", pd.DataFrame()), data_issues=tables["data_issues.csv"],
        audio_issues=audio_issue_table(result))


def audio_issue_table(result) -> pd.DataFrame:
    """audio_issues.csv: path, type, value, threshold, row (as in scores.csv)."""
    table = result.audio_issues
    paths = result.data.clips["path"].to_numpy()[table["row"].to_numpy()]
    return pd.DataFrame({"path": paths, "type": table["type"], "value": table["value"],
                         "threshold": table["threshold"], "row": table["row"]})


def _tag_table(result) -> pd.DataFrame:
    """Multi-label: given, suggested, missing and extra tags (';'-joined) instead of one label each."""
    from audit.labels import as_text

    data, issues = result.data, result.issues
    order, classes = issues.order, data.classes
    table = pd.DataFrame({
        "rank": np.arange(len(order)) + 1,
        "path": data.clips["path"].to_numpy()[order],
        "given_tags": as_text(data.labels[order], classes),
        "suggested_tags": as_text(issues.suggested[order], classes),
        "missing_tags": as_text(issues.missing[order], classes),
        "extra_tags": as_text(issues.extra[order], classes),
        "label_quality": issues.quality[order],
        "is_label_issue": issues.flagged[order],
        "row": order,
    })
    extras = data.clips.drop(columns=["path", "label"]).iloc[order].reset_index(drop=True)
    return pd.concat([table, extras], axis=1)


def label_columns(scores: pd.DataFrame) -> tuple[str, str]:
    """The (given, suggested) column names of a scores table: labels, or tag sets for multi-label."""
    return ("given_tags", "suggested_tags") if "given_tags" in scores else ("given_label", "suggested_label")


def write_outputs(out: Path, files: RunFiles) -> None:
    scores = files.scores
    write_csv(scores[scores["is_label_issue"]], out / "issues.csv")
    write_csv(scores, out / "scores.csv")
    write_csv(files.skipped, out / "skipped.csv")
    write_csv(files.data_issues, out / "data_issues.csv")
    write_csv(files.class_imbalance, out / "class_imbalance.csv")
    write_csv(files.duplicates, out / "duplicates.csv")
    write_csv(files.audio_issues, out / "audio_issues.csv")
    if len(files.outliers.columns):
        write_csv(files.outliers, out / "outliers.csv")
    write_csv(files.clip_map, out / "map.csv")
    _atomic(out / "pred_probs.npy", lambda f: np.save(f, files.pred_probs, allow_pickle=False))
    write_json({"classes": files.classes}, out / "classes.json")
    write_json(files.summary, out / "summary.json")


def data_issue_tables(result) -> dict[str, pd.DataFrame]:
    """outliers.csv, duplicates.csv, class_imbalance.csv and data_issues.csv from Datalab's findings."""
    from audit.labels import as_text

    data, issues = result.data, result.data_issues
    per_clip = issues.per_clip
    base = pd.DataFrame({"path": data.clips["path"], "given_label": as_text(data.labels, data.classes),
                         "row": np.arange(len(data.clips))})  # row: as in scores.csv and map.csv
    tables = {"data_issues.csv": issues.summary}
    if "outlier_score" in per_clip:
        outliers = base.assign(outlier_score=per_clip["outlier_score"], is_outlier_issue=per_clip["is_outlier_issue"])
        tables["outliers.csv"] = outliers[outliers["is_outlier_issue"]].sort_values(
            ["outlier_score", "path"], kind="stable")
    groups = issues.duplicate_groups
    dup = groups[["group", "kind"]].assign(path=data.clips["path"].to_numpy()[groups["row"]],
                                           given_label=base["given_label"].to_numpy()[groups["row"]],
                                           row=groups["row"].to_numpy())
    if "near_duplicate_score" in per_clip:
        dup["near_duplicate_score"] = per_clip["near_duplicate_score"].to_numpy()[groups["row"]]
    tables["duplicates.csv"] = dup
    n_classes = len(data.classes)
    flagged = result.issues.flagged
    if data.multi_label:  # per tag: clips carrying it, and flagged clips carrying it
        counts, n_issues = data.labels.sum(0), data.labels[flagged].sum(0)
    else:
        counts = np.bincount(data.labels, minlength=n_classes)
        n_issues = np.bincount(data.labels[flagged], minlength=n_classes)
    tables["class_imbalance.csv"] = pd.DataFrame({
        "label": data.classes, "n_clips": counts, "share": counts / max(1, len(data.labels)),
        "n_label_issues": n_issues,
    }).assign(issue_rate=lambda d: d["n_label_issues"] / d["n_clips"].clip(lower=1))
    return tables


def write_relabelled_manifest(result, path: Path) -> int:
    """A manifest (absolute paths) with each flagged clip's label replaced by the suggested one.

    Run again on its own output, it keeps the first round's `original_label`, so the review loop
    (audit, relabel, audit the relabelled manifest, ...) can go on for as many rounds as needed.
    """
    from audit.labels import as_text

    data, issues = result.data, result.issues
    suggested = as_text(issues.suggested, data.classes)  # (N,) label, or ';'-joined tag set
    table = data.clips.copy()
    current = as_text(data.labels, data.classes)  # canonical: tag sets sorted, as `suggested` is
    if "original_label" not in table:
        table.insert(2, "original_label", current)
    table["label"] = np.where(issues.flagged, suggested, current)
    relabelled = table["label"].astype(str).to_numpy() != table["original_label"].astype(str).to_numpy()
    if "relabelled" in table:
        table["relabelled"] = relabelled
    else:
        table.insert(3, "relabelled", relabelled)
    table["path"] = data.files
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(table, path)
    return int((issues.flagged & (suggested != current)).sum())


def write_csv(df: pd.DataFrame, path: Path) -> None:
    _atomic(path, lambda f: df.to_csv(f, index=False, float_format=FLOAT_FORMAT, lineterminator="\n"), text=True)


def write_json(obj, path: Path) -> None:
    _atomic(path, lambda f: f.write(json.dumps(obj, indent=2, default=str) + "\n"), text=True)


def _atomic(path: Path, write, text: bool = False) -> None:
    """`path` holds its old bytes or the new ones, never part of them; a failed write leaves no temp file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w" if text else "wb", **({"encoding": "utf-8", "newline": ""} if text else {})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
