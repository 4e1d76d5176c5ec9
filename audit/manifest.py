"""--data -> one table of clips: `path` (as the user wrote it), `label`, and any extra columns.

Kinds of input, told apart by themselves:
  - a CSV, Parquet or JSON-lines manifest with columns path,label (paths absolute or relative to its
    folder); NeMo's `audio_filepath` is read as path; optional `offset` and `duration` (seconds)
    make a row a segment of its file (same path, another segment = another clip),
  - a pandas DataFrame with the same columns (the Python API; relative paths from the working folder),
  - a Hugging Face dataset: `hf:NAME[:CONFIG][:SPLIT]`, a local `save_to_disk` folder, or a
    `datasets.Dataset` (see hf_data.py),
  - a folder of audio files whose label is in the name (`label_pattern`, a regex with group `label`),
  - a folder with one sub-folder per class (DIR/<label>/**/*.wav),
  - "fsdd": the Free Spoken Digit Dataset release the reference workflow used (see fsdd.py).
Rows that cannot be used (file missing, empty label, name not matching the pattern) are set aside
in `skipped` with their reason, never dropped silently.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from audit.errors import UserError, one_line

DEFAULT_LABEL_PATTERN = r"^(?P<label>[^_]+)_"  # FSDD style: 7_jackson_32.wav -> "7"
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf")
TABLE_EXTENSIONS = (".csv", ".parquet", ".pq", ".jsonl", ".json")
NEMO_PATH = "audio_filepath"  # NeMo manifests name the audio file so


@dataclass(frozen=True)
class Manifest:
    clips: pd.DataFrame  # (N rows) path, label, extras...; index 0..N-1
    files: list[str]  # (N,) absolute file to read for each row
    skipped: pd.DataFrame  # path, reason
    source: str  # which kind of input: table, pattern, class-folders, fsdd, hf
    offsets: np.ndarray | None = None  # (N,) seconds into the file where each clip starts; None: 0
    durations: np.ndarray | None = None  # (N,) seconds of the clip; NaN or None: to the end of the file


def load_manifest(data, label_pattern: str = DEFAULT_LABEL_PATTERN, *, need_files: bool = True,
                  label_column: str | None = None, cache_dir: str | None = None, multi_label: bool = False) -> Manifest:
    """`need_files=False` (embeddings given by the user) keeps rows whose audio is not on this machine."""
    from audit import hf_data

    if isinstance(data, pd.DataFrame):
        return _from_frame(data.copy(), Path.cwd(), "table", need_files, multi_label=multi_label)
    if hf_data.is_hf_input(data):
        table = hf_data.load_table(data, label_column=label_column, cache_dir=cache_dir)
        return _from_frame(table, Path.cwd(), "hf", need_files, multi_label=multi_label)
    if data == "fsdd":
        from audit import fsdd

        files = fsdd.fsdd_files()
        return _from_rows([(str(f), f.name) for f in files], fsdd.LABEL_PATTERN, "fsdd")
    path = Path(data)
    if not path.exists():
        raise UserError(f"--data {data}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() not in TABLE_EXTENSIONS:
            raise UserError(f"--data {data}: a file must be a .csv, .parquet or .jsonl manifest with columns path,label")
        return _from_table(path, need_files, multi_label)
    top = sorted(e for e in os.listdir(path) if e.lower().endswith(AUDIO_EXTENSIONS))
    if top:
        return _from_rows([(str(path / n), n) for n in top], label_pattern, "pattern")
    classes = _class_folders(path)
    if classes:
        return _from_class_folders(path, classes)
    raise UserError(f"--data {data}: no audio files found (looked for {', '.join(AUDIO_EXTENSIONS)} "
                    "in the folder and in one sub-folder per class)")


def _from_rows(rows: list[tuple[str, str]], label_pattern: str, source: str) -> Manifest:
    try:
        regex = re.compile(label_pattern)
    except re.error as e:
        raise UserError(f"--label-pattern {label_pattern!r} is not a valid regex: {e}") from None
    if "label" not in regex.groupindex:
        raise UserError(f"--label-pattern {label_pattern!r} needs a named group (?P<label>...)")
    kept, skipped = [], []
    for shown, name in rows:
        m = regex.search(name)
        label = m.group("label") if m else None
        if not label:
            skipped.append((shown, f"file name does not match --label-pattern {label_pattern!r}"))
        else:
            kept.append((shown, label))
    clips = pd.DataFrame(kept, columns=["path", "label"])
    return _checked(clips, [os.path.abspath(p) for p in clips["path"]], skipped, source)


def _class_folders(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                  and any(_audio_under(d)))


def _audio_under(folder: Path):
    for dirpath, _, names in os.walk(folder, followlinks=True):
        for n in sorted(names):
            if n.lower().endswith(AUDIO_EXTENSIONS):
                yield os.path.join(dirpath, n)


def _from_class_folders(root: Path, classes: list[str]) -> Manifest:
    rows = [(p, c) for c in classes for p in sorted(_audio_under(root / c))]
    clips = pd.DataFrame(rows, columns=["path", "label"])
    return _checked(clips, [os.path.abspath(p) for p in clips["path"]], [], "class-folders")


def _from_table(path: Path, need_files: bool = True, multi_label: bool = False) -> Manifest:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False)  # extras kept verbatim (ids, "007")
        elif suffix in (".jsonl", ".json"):
            table = pd.read_json(path, lines=True, dtype=False)
        else:
            table = pd.read_parquet(path)
    except Exception as e:
        raise UserError(f"--data {path}: cannot read the manifest: {one_line(e, 200)}") from None
    return _from_frame(table, path.parent, "table", need_files, name=str(path), multi_label=multi_label)


def _from_frame(table: pd.DataFrame, base: Path, source: str, need_files: bool, name: str = "the table",
                multi_label: bool = False) -> Manifest:
    if "path" not in table.columns and NEMO_PATH in table.columns:
        table = table.rename(columns={NEMO_PATH: "path"})
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise UserError(f"--data {name}: the manifest lacks column(s) {', '.join(missing)} "
                        f"(it has: {', '.join(map(str, table.columns))})")
    table = table.reset_index(drop=True)
    table["path"] = table["path"].fillna("").astype(str)
    table["label"] = table["label"].fillna("").astype(str).str.strip()
    # A multi-label cell may be empty: "no tags" is a label set too.
    bad = (table["path"] == "") | ((table["label"] == "") & (not multi_label))
    skipped = [(p, "empty label" if p else "empty path") for p in table.loc[bad, "path"]]
    table = table[~bad].reset_index(drop=True)
    files = [os.path.abspath(os.path.join(base, p)) for p in table["path"]]
    return _checked(table, files, skipped, source, need_files)


def segments(clips: pd.DataFrame, name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(offsets (N,), durations (N,)) in seconds from optional `offset`/`duration` columns; None where absent."""
    out = []
    for col in ("offset", "duration"):
        if col not in clips.columns:
            out.append(None)
            continue
        values = pd.to_numeric(clips[col].replace("", np.nan), errors="coerce").to_numpy(np.float64)
        if col == "offset":
            values = np.nan_to_num(values, nan=0.0)
        if (values[np.isfinite(values)] < 0).any():
            raise UserError(f"--data {name}: negative {col} in the manifest")
        out.append(values)
    return out[0], out[1]


def _checked(clips: pd.DataFrame, files: list[str], skipped: list, source: str, need_files: bool = True) -> Manifest:
    """Sets aside rows whose file is missing, so later stages only see files that exist."""
    exists = [os.path.isfile(f) or not need_files for f in files]
    skipped = skipped + [(p, "file not found") for p, ok in zip(clips["path"], exists) if not ok]
    keep = pd.Series(exists, dtype=bool)
    clips = clips[keep.values].reset_index(drop=True)
    files = [f for f, ok in zip(files, exists) if ok]
    skipped = pd.DataFrame(skipped, columns=["path", "reason"])
    if clips.empty:
        raise UserError(f"no usable clips: all {len(skipped)} rows were skipped "
                        f"(first reason: {skipped['reason'].iloc[0] if len(skipped) else 'none'})")
    offsets, durations = segments(clips, source)
    return Manifest(clips=clips, files=files, skipped=skipped, source=source, offsets=offsets, durations=durations)
