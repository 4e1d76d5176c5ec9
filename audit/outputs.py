"""The files in --out, each written atomically (temp file + rename), and the terminal summary.

    issues.csv      flagged clips, most likely error first
    scores.csv      every clip, same columns, most likely error first
    pred_probs.npy  (N, C) out-of-fold probabilities, rows in manifest order; classes.json names C
    skipped.csv     path, reason: every clip that could not be used
    summary.json    counts, CV accuracy, seconds per stage, encoder, versions, seed, every option
    cache/          the embedding cache (see cache.py)
"""

from __future__ import annotations

import json
import os
import platform
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
    })
    extras = clips.drop(columns=["path", "label"]).reset_index(drop=True)
    return pd.concat([table, extras], axis=1)


def write_outputs(out: Path, result, summary: dict) -> pd.DataFrame:
    table = issue_table(result)
    write_csv(table[table["is_label_issue"]], out / "issues.csv")
    write_csv(table, out / "scores.csv")
    write_csv(result.skipped, out / "skipped.csv")
    _atomic(out / "pred_probs.npy", lambda f: np.save(f, result.pred_probs, allow_pickle=False))
    write_json({"classes": list(result.classes)}, out / "classes.json")
    write_json(summary, out / "summary.json")
    return table


def build_summary(result, options: dict, total_seconds: float) -> dict:
    return {
        "n_clips": int(len(result.clips)),
        "n_skipped": int(len(result.skipped)),
        "n_classes": len(result.classes),
        "cv_accuracy": float((result.pred_probs.argmax(1) == result.labels).mean()),
        "n_label_issues": int(result.ranking["is_label_issue"].sum()),
        "classes": list(result.classes),
        "seconds": {**{k: round(v, 3) for k, v in result.seconds.items()}, "total": round(total_seconds, 3)},
        "encoder": options["encoder"],
        "seed": options["seed"],
        **result.facts,
        "versions": versions(),
        "options": options,
    }


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
    p(f"outputs in {out}/: issues.csv, scores.csv, skipped.csv, summary.json, pred_probs.npy")


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
