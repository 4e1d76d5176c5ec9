"""The files in --out, each written atomically (temp file + rename), and the terminal summary.

    issues.csv      flagged clips, most likely error first
    scores.csv      every clip, same columns, most likely error first
    pred_probs.npy  (N, C) out-of-fold probabilities, rows in manifest order; classes.json names C
    skipped.csv     path, reason: every clip that could not be used
    summary.json    counts, CV accuracy, seconds per stage, encoder, versions, seed, every option
    outliers.csv    clips unlike their class or the dataset, most unusual first (cleanlab Datalab)
    duplicates.csv  groups of identical (same bytes) or near-identical (embedding) clips
    class_imbalance.csv, data_issues.csv   per-class counts; Datalab's summary of every issue type
    map.csv         path, x, y: a 2-D PCA map of the embeddings (the report draws it)
    report.html     the page to review issues in (see report/)
    cache/          the embedding cache (see cache.py)
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from audit.errors import UserError

MARKER = ".audit-output"  # tells a folder audit wrote from a user's folder it must not clobber
FLOAT_FORMAT = "%.6g"  # 6 significant digits: stable across BLAS builds, plenty to rank by
PACKAGES = ("audit", "torch", "torchaudio", "speechbrain", "cleanlab", "lightning", "numpy", "pandas", "soundfile")


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
    r = result.ranking
    clips = result.clips.loc[r.index]
    classes = np.asarray(result.classes, dtype=object)
    rows = np.arange(len(r))
    probs = result.pred_probs[r.index]  # (N, C) in ranked order
    table = pd.DataFrame({
        "rank": rows + 1,
        "path": clips["path"].to_numpy(),
        "given_label": classes[r["given"].to_numpy()],
        "suggested_label": classes[r["suggested"].to_numpy()],
        "label_quality": r["label_quality"].to_numpy(),
        "is_label_issue": r["is_label_issue"].to_numpy(),
        "given_prob": probs[rows, r["given"].to_numpy()],
        "suggested_prob": probs[rows, r["suggested"].to_numpy()],
        "row": r.index.to_numpy(),  # this clip's row in pred_probs.npy and map.csv
    })
    extras = clips.drop(columns=["path", "label"]).reset_index(drop=True)
    return pd.concat([table, extras], axis=1)


def write_outputs(out: Path, result, summary: dict) -> pd.DataFrame:
    table = issue_table(result)
    write_csv(table[table["is_label_issue"]], out / "issues.csv")
    write_csv(table, out / "scores.csv")
    write_csv(result.skipped, out / "skipped.csv")
    for name, frame in data_issue_tables(result).items():
        write_csv(frame, out / name)
    write_csv(pd.DataFrame({"row": np.arange(len(result.clips)), "path": result.clips["path"], "file": result.files,
                            "x": result.map_2d[:, 0], "y": result.map_2d[:, 1]}), out / "map.csv")
    _atomic(out / "pred_probs.npy", lambda f: np.save(f, result.pred_probs, allow_pickle=False))
    write_json({"classes": list(result.classes)}, out / "classes.json")
    write_json(summary, out / "summary.json")
    return table


def data_issue_tables(result) -> dict[str, pd.DataFrame]:
    """outliers.csv, duplicates.csv, class_imbalance.csv and data_issues.csv from Datalab's findings."""
    issues, clips = result.data_issues, result.clips
    per_clip = issues.per_clip
    base = pd.DataFrame({"path": clips["path"], "given_label": np.asarray(result.classes, dtype=object)[result.labels],
                         "row": np.arange(len(clips))})  # row: as in scores.csv and map.csv
    tables = {"data_issues.csv": issues.summary}
    if "outlier_score" in per_clip:
        outliers = base.assign(outlier_score=per_clip["outlier_score"], is_outlier_issue=per_clip["is_outlier_issue"])
        tables["outliers.csv"] = outliers[outliers["is_outlier_issue"]].sort_values(
            ["outlier_score", "path"], kind="stable")
    groups = issues.duplicate_groups
    dup = groups[["group", "kind"]].assign(path=clips["path"].to_numpy()[groups["row"]],
                                           given_label=base["given_label"].to_numpy()[groups["row"]],
                                           row=groups["row"].to_numpy())
    if "near_duplicate_score" in per_clip:
        dup["near_duplicate_score"] = per_clip["near_duplicate_score"].to_numpy()[groups["row"]]
    tables["duplicates.csv"] = dup
    counts = pd.Series(result.labels).value_counts().reindex(range(len(result.classes)), fill_value=0)
    flagged = result.ranking.sort_index()["is_label_issue"].to_numpy()
    tables["class_imbalance.csv"] = pd.DataFrame({
        "label": result.classes, "n_clips": counts.to_numpy(),
        "share": counts.to_numpy() / counts.sum(),
        "n_label_issues": np.bincount(result.labels[flagged], minlength=len(result.classes)),
    }).assign(issue_rate=lambda d: d["n_label_issues"] / d["n_clips"].clip(lower=1))
    return tables


def write_relabelled_manifest(result, path: Path) -> int:
    """A manifest (absolute paths) with each flagged clip's label replaced by the suggested one."""
    ranking = result.ranking.sort_index()
    classes = np.asarray(result.classes, dtype=object)
    suggested = classes[ranking["suggested"].to_numpy()]
    flagged = ranking["is_label_issue"].to_numpy()
    table = result.clips.copy()
    table.insert(2, "original_label", table["label"])
    table.insert(3, "relabelled", flagged & (suggested != table["label"].to_numpy()))
    table["label"] = np.where(flagged, suggested, table["label"].to_numpy())
    table["path"] = result.files
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(table, path)
    return int(table["relabelled"].sum())


def build_summary(result, options: dict, total_seconds: float) -> dict:
    issues = result.data_issues
    counts = dict(zip(issues.summary["issue_type"], issues.summary["num_issues"].astype(int)))
    groups = issues.duplicate_groups
    return {
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["audit"] + [shlex.quote(a) for a in sys.argv[1:]]),
        "n_clips": int(len(result.clips)),
        "n_skipped": int(len(result.skipped)),
        "n_classes": len(result.classes),
        "cv_accuracy": float((result.pred_probs.argmax(1) == result.labels).mean()),
        "n_label_issues": int(result.ranking["is_label_issue"].sum()),
        "data_issues": {
            "n_outliers": counts.get("outlier", 0),
            "n_near_duplicates": counts.get("near_duplicate", 0),
            "n_duplicate_groups": int(groups["group"].nunique()),
            "n_exact_duplicate_clips": int((groups["kind"] == "exact").sum()),
            "non_iid_score": float(issues.summary.set_index("issue_type")["score"].get("non_iid", float("nan"))),
            "n_class_imbalance": counts.get("class_imbalance", 0),
            "n_underperforming_group": counts.get("underperforming_group", 0),
        },
        "classes": list(result.classes),
        "seconds": {**{k: round(v, 3) for k, v in result.seconds.items()}, "total": round(total_seconds, 3)},
        "encoder": options["encoder"],
        "seed": options["seed"],
        "peak_rss_mb": peak_rss_mb(),
        **result.facts,
        "versions": versions(),
        "options": options,
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process or any child it waited for (DDP ranks, loader workers)."""
    import resource

    usage = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(usage / 1024, 1)  # Linux reports KiB


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def print_summary(summary: dict, table: pd.DataFrame, out: Path, top: int = 10, file=None) -> None:
    p = lambda *a: print(*a, file=file or sys.stdout)  # noqa: E731
    p(f"\naudit: {summary['n_clips']} clips, {summary['n_classes']} classes, {summary['n_skipped']} skipped; "
      f"CV accuracy {summary['cv_accuracy']:.3f}; {summary['n_label_issues']} likely label issues")
    flagged = table[table["is_label_issue"]].head(top)
    if len(flagged):
        p(f"top {len(flagged)}:")
        width = min(60, max(len(str(x)) for x in flagged["path"]))
        for row in flagged.itertuples():
            p(f"  {row.rank:>4}  {str(row.path)[-width:]:<{width}}  given {row.given_label!s:<8} "
              f"suggested {row.suggested_label!s:<8} quality {row.label_quality:.3f}")
    di = summary.get("data_issues", {})
    if di:
        p(f"also: {di['n_outliers']} outliers, {di['n_duplicate_groups']} duplicate groups "
          f"({di['n_exact_duplicate_clips']} clips byte-identical to another)")
    p(f"outputs in {out}/: report.html (open it in a browser), issues.csv, scores.csv, outliers.csv, "
      "duplicates.csv, skipped.csv, summary.json")


def write_csv(df: pd.DataFrame, path: Path) -> None:
    _atomic(path, lambda f: df.to_csv(f, index=False, float_format=FLOAT_FORMAT, lineterminator="\n"), text=True)


def write_json(obj, path: Path) -> None:
    _atomic(path, lambda f: f.write(json.dumps(obj, indent=2, default=str) + "\n"), text=True)


def _atomic(path: Path, write, text: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w" if text else "wb", **({"encoding": "utf-8", "newline": ""} if text else {})) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
