"""How many clips each audio-health check lists on whole datasets, and the dataset-level notes.

    python bench/health_sets.py bench/out/real/esc50/manifest.csv fsdd=../shared/data/fsdd/recordings ...

Each source is a manifest (`path` column, relative to the manifest) or a folder of audio files, named
by its folder unless given as NAME=PATH. Clips
are read as the decoding workers read them (soundfile, native rate, float32 (T, C)) and measured with
health.clip_health; the counts are those of health.issue_table, i.e. the rows audio_issues.csv
would hold. Prints one markdown table (clips listed per check, per dataset) and the notes that
health.dataset_notes reports once per dataset instead. An unreadable or empty clip is counted and
skipped, as the pipeline skips it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from audit import health  # noqa: E402

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}


def clip_files(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    with open(source, newline="") as f:
        return [source.parent / row["path"] for row in csv.DictReader(f)]


def measure(files: list[Path]) -> tuple[dict[int, health.ClipHealth], int]:
    """(row -> ClipHealth of each readable clip, number skipped)."""
    healths, skipped = {}, 0
    for row, path in enumerate(files):
        try:
            data, rate = sf.read(path, dtype="float32", always_2d=True)  # (T, C)
            healths[row] = health.clip_health(data, rate)
        except (RuntimeError, ValueError) as e:  # libsndfile's errors, an empty clip: the pipeline skips them too
            print(f"skipped {path}: {e}", file=sys.stderr)
            skipped += 1
    return healths, skipped


def named(arg: str) -> tuple[str, Path]:
    name, _, path = arg.rpartition("=")
    source = Path(path)
    return name or (source.name if source.is_dir() else source.parent.name), source


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", type=named, help="manifest.csv files or folders of audio, "
                        "each optionally NAME=PATH")
    args = parser.parse_args(argv)
    types = [*health.CLIP_ISSUE_TYPES, *health.DATASET_ISSUE_TYPES]
    lines = ["| dataset | clips | " + " | ".join(types) + " |", "|---|---:|" + "---:|" * len(types)]
    notes = []
    for name, source in args.sources:
        healths, skipped = measure(clip_files(source))
        table = health.issue_table(healths)
        n = len(healths)
        listed = table.groupby("type")["row"].nunique()
        cells = [f"{int(listed.get(t, 0))} ({100 * listed.get(t, 0) / max(n, 1):.1f}%)" for t in types]
        lines.append(f"| {name} | {n}{f' (+{skipped} skipped)' if skipped else ''} | " + " | ".join(cells) + " |")
        notes += [f"- {name}: {note['text']}" for note in health.dataset_notes(list(healths.values()))]
        print(f"{name}: {n} clips, rates {dict(Counter(h.rate for h in healths.values()))}", file=sys.stderr)
    print("\n".join(lines))
    print("\ndataset-level (reported once, not per clip):")
    print("\n".join(notes) if notes else "- none")


if __name__ == "__main__":
    main()
