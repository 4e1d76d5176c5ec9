"""Hugging Face datasets as --data: a hub name, a local `save_to_disk` folder, or a `datasets.Dataset`.

    --data hf:NAME[:CONFIG][:SPLIT]       e.g. hf:speech_commands:v0.02:train (downloads, users' machines)
    --data path/to/saved_dataset          a folder written by Dataset.save_to_disk (or a DatasetDict's)
    audit.run(dataset)                     a datasets.Dataset in a notebook

The Audio column is read *without* decoding through `datasets` (cast to `Audio(decode=False)`):
datasets 4+ decodes through torchcodec, which ties it to one torch build. Each row's audio is then a
file path (used as it is) or the file's bytes, which are written once to a cache folder named by
the dataset's fingerprint; audit's own soundfile path decodes them in the workers like any file.
The label column is a ClassLabel feature (its names are used), or named with --label-column.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from audit.errors import UserError, one_line
from audit.options import cache_root

PREFIX = "hf:"
LABEL_NAMES = ("label", "labels", "class", "category", "target")  # tried in order when no ClassLabel exists


def is_hf_input(data) -> bool:
    if isinstance(data, str):
        return data.startswith(PREFIX) or _is_saved_dataset(Path(data))
    return type(data).__module__.startswith("datasets")


def load_table(data, *, label_column: str | None = None, cache_dir: str | None = None) -> pd.DataFrame:
    """A manifest table (path, label, extras) for a hub name, a saved folder or a Dataset."""
    try:
        import datasets
    except ImportError:
        raise UserError("--data: a Hugging Face dataset needs the `datasets` package: pip install datasets") from None
    dataset = _open(data, datasets)
    audio = [name for name, f in dataset.features.items() if isinstance(f, datasets.Audio)]
    if not audio:
        raise UserError(f"--data {_name(data)}: no Audio column (columns: {', '.join(dataset.column_names)})")
    label = label_column or _label_column(dataset, datasets)
    if label not in dataset.column_names:
        raise UserError(f"--label-column {label}: not a column of {_name(data)} ({', '.join(dataset.column_names)})")
    dataset = dataset.cast_column(audio[0], datasets.Audio(decode=False))
    folder = Path(cache_dir or cache_root()) / "hf-audio" / dataset._fingerprint
    feature = dataset.features[label]
    names = feature.names if isinstance(feature, datasets.ClassLabel) else None
    extras = [c for c in dataset.column_names
              if c not in (audio[0], label, "path", "label") and _is_scalar(dataset.features[c])]
    rows = []
    for i, item in enumerate(dataset):
        value = item[label]
        rows.append({"path": _audio_file(item[audio[0]], folder, i),
                     "label": names[value] if names is not None and value is not None and value >= 0 else
                     ("" if value is None else str(value)),
                     **{c: item[c] for c in extras}})
    return pd.DataFrame(rows)


def _open(data, datasets):
    if not isinstance(data, str):
        return data
    if data.startswith(PREFIX):
        parts = data[len(PREFIX):].split(":")
        name, config, split = (parts + [None, None])[:3]
        try:
            loaded = datasets.load_dataset(name, config or None, split=split or None)
        except Exception as e:
            raise UserError(f"--data {data}: could not load it ({one_line(e, 200)})") from None
    else:
        loaded = datasets.load_from_disk(data)
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise UserError(f"--data {data}: several splits ({', '.join(loaded)}); name one: hf:NAME:CONFIG:SPLIT, "
                            "or save one split")
        loaded = next(iter(loaded.values()))
    return loaded


def _label_column(dataset, datasets) -> str:
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.ClassLabel):
            return name
    for name in LABEL_NAMES:
        if name in dataset.column_names:
            return name
    raise UserError(f"no label column found (no ClassLabel, none of {', '.join(LABEL_NAMES)}): name it with "
                    "--label-column")


def _audio_file(audio: dict, folder: Path, row: int) -> str:
    """A file holding this row's audio: its own path if it exists, else its bytes written once to `folder`."""
    path = audio.get("path")
    if path and os.path.isfile(path):
        return os.path.abspath(path)
    data = audio.get("bytes")
    if not data:
        return path or f"<row {row}: no audio>"
    suffix = Path(path).suffix if path else ".wav"
    target = folder / f"{row:08d}{suffix or '.wav'}"
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    return str(target)


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in ("dataset_info.json", "dataset_dict.json", "state.json"))


def _is_scalar(feature) -> bool:
    return type(feature).__name__ == "Value"


def _name(data) -> str:
    return data if isinstance(data, str) else "the dataset"
