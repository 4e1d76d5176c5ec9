"""The run's summary: summary.json's record (counts, estimate, seconds, versions, options) and the terminal
lines a user reads first ("~62 likely label issues (range 50-75)"). The files themselves: outputs.py."""

from __future__ import annotations

import datetime
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd

from audit.outputs import label_columns

PACKAGES = ("audit", "torch", "torchaudio", "speechbrain", "cleanlab", "lightning", "numpy", "pandas", "soundfile")


def build_summary(result, options: dict, total_seconds: float) -> dict:
    data, issues = result.data, result.data_issues
    counts = dict(zip(issues.summary["issue_type"], issues.summary["num_issues"].astype(int)))
    groups = issues.duplicate_groups
    return {
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["audit"] + [shlex.quote(a) for a in sys.argv[1:]]),
        "n_clips": int(len(data.clips)),
        "n_skipped": int(len(data.skipped)),
        "n_classes": len(data.classes),
        "multi_label": data.multi_label,
        # single-label: share of clips whose arg-max is the given class; multi-label: of tags, given or not,
        # that the 0.5 threshold gets right
        "cv_accuracy": float(((result.pred_probs >= 0.5) == data.labels.astype(bool)).mean() if data.multi_label
                             else (result.pred_probs.argmax(1) == data.labels).mean()),
        "n_label_issues": int(result.issues.flagged.sum()),
        **({} if result.issues.count is None else {"label_issue_estimate": estimate_record(result.issues.count)}),
        "data_issues": {
            "n_outliers": counts.get("outlier", 0),
            "n_near_duplicates": counts.get("near_duplicate", 0),
            "n_duplicate_groups": int(groups["group"].nunique()),
            "n_exact_duplicate_clips": int((groups["kind"] == "exact").sum()),
            "non_iid_score": float(issues.summary.set_index("issue_type")["score"].get("non_iid", float("nan"))),
            "n_class_imbalance": counts.get("class_imbalance", 0),
            "n_underperforming_group": counts.get("underperforming_group", 0),
        },
        "audio_issues": {"n_clips": int(result.audio_issues["row"].nunique()),
                         **{str(t): int(n) for t, n in result.audio_issues["type"].value_counts().sort_index().items()},
                         "dataset_level": result.audio_notes},  # shared by most clips: said once, not per clip
        "classes": list(data.classes),
        "seconds": {**{k: round(v, 3) for k, v in {**data.seconds, **result.seconds}.items()},
                    "total": round(total_seconds, 3)},
        "encoder": f"precomputed: {options['embeddings']}" if options.get("embeddings") else
                   data.facts.get("encoder_chosen") or  # --encoder auto: the winner (encoder_choice: why)
                   (options["encoder"] if isinstance(options["encoder"], str) else list(options["encoder"])),
        "seed": options["seed"],
        "peak_rss_mb": peak_rss_mb(),
        **data.facts,
        "versions": versions(),
        "options": options,
    }


def estimate_record(count) -> dict:
    """summary.json's label_issue_estimate: how many labels look wrong, with the range a user can quote."""
    return {"estimate": round(count.estimate, 1), "low": round(count.low, 1), "high": round(count.high, 1),
            "rounded": int(round(count.estimate)),  # what the summary line quotes: class labels flag exactly this many
            "flagged": count.flagged, "rules": dict(count.rules),
            "range": "5th-95th percentile of the estimate over bootstrap resamples of the clips",
            "method": "the median of the rules' counts (issue_count.py); the flagged clips are the top of the "
                      "ranking at that size (tag sets: at the size with the best expected F1, label_issues.cut)"}


def issues_line(summary: dict) -> str:
    """'~62 likely label issues (range 50-75)': the count a user quotes, with its range where it was estimated,
    and how many are flagged where that differs (tag sets: label_issues.cut)."""
    est = summary.get("label_issue_estimate")
    if not est:
        return f"{summary['n_label_issues']} likely label issues"
    return (f"~{estimate_shown(est)} likely label issues (range {est['low']:.0f}-{est['high']:.0f})"
            f"{flagged_note(summary)}")


def estimate_shown(est: dict) -> int:
    """The estimate as the summary line and the report quote it (summary.json's label_issue_estimate)."""
    return int(est.get("rounded", round(est["estimate"])))  # summaries written before 2026-12-03 lack "rounded"


def flagged_note(summary: dict) -> str:
    """', the 58 most likely flagged' where the flagged count is not the estimate quoted (tag sets), else ''."""
    est, flagged = summary.get("label_issue_estimate"), summary["n_label_issues"]
    return "" if not est or flagged == estimate_shown(est) else f", the {flagged} most likely flagged"


def final_seconds(summary: dict, later: dict, total: float) -> dict:
    """summary with `later` stages (tables, write, report) added to its seconds and the whole run's total:
    `other` is what no stage accounts for, so the stages sum to the total."""
    seconds = {k: v for k, v in summary["seconds"].items() if k != "total"}
    seconds.update({k: round(v, 3) for k, v in later.items()})
    seconds["other"] = round(max(0.0, total - sum(seconds.values())), 3)
    seconds["total"] = round(total, 3)
    return {**summary, "seconds": seconds}


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
      f"CV accuracy {summary['cv_accuracy']:.3f}; {issues_line(summary)}")
    flagged = table[table["is_label_issue"]].head(top)
    if len(flagged):
        p(f"top {len(flagged)}:")
        width = min(60, max(len(str(x)) for x in flagged["path"]))
        given, suggested = label_columns(flagged)
        for row in flagged.itertuples():
            p(f"  {row.rank:>4}  {str(row.path)[-width:]:<{width}}  given {getattr(row, given)!s:<8} "
              f"suggested {getattr(row, suggested)!s:<8} quality {row.label_quality:.3f}")
    di = summary.get("data_issues", {})
    if di:
        p(f"also: {di['n_outliers']} outliers, {di['n_duplicate_groups']} duplicate groups "
          f"({di['n_exact_duplicate_clips']} clips byte-identical to another)")
    ai = summary.get("audio_issues", {})
    if ai.get("n_clips"):
        kinds = ", ".join(f"{n} {t}" for t, n in ai.items() if t not in ("n_clips", "dataset_level"))
        p(f"audio health: {ai['n_clips']} clips with problems in the audio itself ({kinds}): audio_issues.csv")
    for note in ai.get("dataset_level", []):
        p(f"audio health, whole dataset: {note['text']}")
    p(f"outputs in {out}/: report.html (open it in a browser), issues.csv, scores.csv, outliers.csv, "
      "duplicates.csv, audio_issues.csv, skipped.csv, summary.json")
