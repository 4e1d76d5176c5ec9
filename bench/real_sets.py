"""Rebuild real (non-English-speech) labelled audio sets from fetched GitHub mirrors: audio plus `manifest.csv`.

    .venv/bin/python bench/real_sets.py SET|all [--out DIR] [--mirrors DIR] [--verify]

Writes DIR/SET/audio/00000.wav ... and DIR/SET/manifest.csv (`path,label`, path relative to the manifest, then
extra columns; `source` is the file's path in the repository). DIR defaults to bench/out/real (git-ignored).
Nothing is fetched: each set reads one mirror under $AUDIT_MIRRORS (default /work/.mirror/owner+name/repo[/.git],
as the session tool `fetch github:owner/name` leaves it) at the pinned commit; a missing mirror or commit is
reported in one line. Output names are neutral (a flipped label leaks nowhere); files are numbered in order of
their source path. Byte-identical copies (same git blob) are dropped first, keeping the first path. Sampling
uses no RNG: in each stratum files rank by sha256("0:" + source path) (seed 0) and the first k are kept. mp3
sources are decoded (libsndfile) to 16-bit wav at their own rate (mp3 seeks are approximate); wav is copied.
`--verify` decodes every file of the set(s) and prints clips per class, duration min/median/max, sample rates.

set            kind           source repo @ commit                          licence (data)          N     classes
esc50          environmental  londonreturns/ESC-50_Sound_Classification     ESC-50: CC BY-NC 3.0    1,500 50 x 30
esc10          environmental    @ 09c775cc5294b67a479fd89961bf05d512709ca2   (repo code: MIT)        400   10 x 40
  ESC-50 (Piczak 2015) as resampled to 16 kHz mono PCM_16 5.0 s by the Kaggle copy the repo vendors
  (environmental-sound-classification-50/versions/15/audio/audio/16000/). Label = `category` of its esc50.csv;
  extras fold (1-5), src_file (Freesound id; clips of one source share a fold), take. esc50: 6 of the 8 clips of
  each (class, fold); esc10: the whole ESC-10 subset (esc10 == True), unsampled.
philharmonia   instruments    skratchdot/philharmonia-samples               CC BY-SA 3.0            1,200 12 x 100
                                @ 717b7de2bcae05e44aa8a3dde143c8d093b8f6c8   (Philharmonia Orch.)
  Single notes, mp3 44.1 kHz mono -> wav, 0.3-6.4 s. Label = instrument (first filename field). Eligible: note
  length 1, 15 (1.5 s) or long (not 0.25/0.5 s, not very-long: up to 67 s, not phrases), articulation normal or
  arco-normal;
  the 12 instruments with >= 260 eligible notes (no trumpet/tuba/violin/viola in this backup); 100 each.
  Extras pitch, length, dynamic, articulation.
ravdess        emotional      ZenvilleErasmus/RAVDESS-emotions-speech-      CC BY-NC-SA 4.0         767   8 x 95-96
               speech           audio-only @ 29dc10e08b419f805a29c691c4dbc03da0b2b43e  (repo code: MIT)
  RAVDESS audio-only speech, 24 actors (12 F / 12 M), 48 kHz PCM_16 wav, 2.9-4.8 s. Label = emotion code of the
  filename (field 3); only normal intensity (field 4 == 01), so every emotion has 96 clips (24 actors x 2
  statements x 2 repetitions; happy 95: Actor_07's two repetitions of statement 2 are one file) and nothing is
  sampled. 5 of the files are stereo. Extras actor, gender, statement, repetition.
arabic-digits  non-English    abdulkaderghandoura/arabic-speech-commands-  CC BY 4.0               1,200 10 x 120
               keywords         dataset @ 72f3438212ff6cf8fbe5ae8068361840646429bd
  Arabic Speech Commands, digit keywords zero..nine only; 16 kHz mono PCM_16, 1.0 s. Label = folder. 30
  speakers x 10 rounds per digit; 4 rounds of each (digit, speaker) kept. Extras speaker, round.
ukrainian-     non-English    CaCuCkA/ukranian-spoken-digits                none stated (no LICENSE) 749  10 x 74-75
digits         digits           @ 16e0db48003793295efd196d83eed90e4453af02
  recordings/<man|woman>_<n>/<speaker>_<digit>.mp3, 48 kHz mono mp3 -> wav (1 file 44.1 kHz); label = digit in
  the filename. Whole set less 120 files of 12 speakers that are AAC/M4A misnamed .mp3 (libsndfile cannot read
  them) and woman_51 (a copy of woman_50): 75 speakers, 0.2-2.1 s. Extras speaker, gender.
bengali-digits non-English    BachchuPaul/Bengali-Isolated-Spoken-Digit     none stated (paper:     1,200 10 x 120
               digits           @ 5c5a23d89e3648e9556486475cd840ab560a6957   Paul & Phadikar 2023)
  Bengali digit words (sunno, ek, dui, tin, char, panch, choy, sat, aat, noi), 16 kHz PCM_16, 1.0 s. Label =
  folder; 120 per digit. Extra speaker = filename before the first '_' or ' ', lower-cased (files are named
  unevenly: 43 names).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
MIRRORS = Path(os.environ.get("AUDIT_MIRRORS", "/work/.mirror"))
SEED = 0
ESC_DIR = "environmental-sound-classification-50/versions/15/"
PHIL = ("bass-clarinet", "bassoon", "cello", "clarinet", "contrabassoon", "double-bass", "english-horn", "flute",
        "french-horn", "oboe", "saxophone", "trombone")
EMOTIONS = {1: "neutral", 2: "calm", 3: "happy", 4: "sad", 5: "angry", 6: "fearful", 7: "disgust", 8: "surprised"}
DIGITS_EN = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ESC = ("londonreturns/ESC-50_Sound_Classification", "09c775cc5294b67a479fd89961bf05d512709ca2")
REPOS = {  # set -> (owner/name, commit)
    "esc50": ESC,
    "esc10": ESC,
    "philharmonia": ("skratchdot/philharmonia-samples", "717b7de2bcae05e44aa8a3dde143c8d093b8f6c8"),
    "ravdess": ("ZenvilleErasmus/RAVDESS-emotions-speech-audio-only", "29dc10e08b419f805a29c691c4dbc03da0b2b43e"),
    "arabic-digits": ("abdulkaderghandoura/arabic-speech-commands-dataset", "72f3438212ff6cf8fbe5ae8068361840646429bd"),
    "ukrainian-digits": ("CaCuCkA/ukranian-spoken-digits", "16e0db48003793295efd196d83eed90e4453af02"),
    "bengali-digits": ("BachchuPaul/Bengali-Isolated-Spoken-Digit", "5c5a23d89e3648e9556486475cd840ab560a6957"),
}


class Mirror:
    """Read-only access to one fetched bare repository at a pinned commit."""

    def __init__(self, repo: str, commit: str):
        base = MIRRORS / repo.replace("/", "+")
        found = [p for p in (base / "repo" / ".git", base / "repo", base) if (p / "objects").is_dir()]
        if not found:
            sys.exit(f"missing mirror {base}: run the session tool `fetch github:{repo}` first")
        self.git, self.commit = found[0], commit
        if subprocess.run(["git", f"--git-dir={self.git}", "cat-file", "-e", f"{commit}^{{commit}}"],
                          stderr=subprocess.DEVNULL).returncode:
            sys.exit(f"mirror {self.git} lacks commit {commit}: `fetch github:{repo}` again or update the pin")

    def ls(self, prefix: str = "") -> list[str]:
        """Sorted file paths under prefix, byte-identical copies (same blob) dropped after their first path."""
        out = subprocess.run(["git", f"--git-dir={self.git}", "ls-tree", "-r", "-z", self.commit, "--", prefix or "."],
                             capture_output=True, check=True).stdout
        entries = sorted((e.split("\t", 1)[1], e.split()[2]) for e in out.decode().split("\0") if e)
        seen: set[str] = set()
        return [p for p, blob in entries if not (blob in seen or seen.add(blob))]

    def read(self, paths: list[str]):
        """Yield (path, bytes) for each path, through one `git cat-file --batch`."""
        proc = subprocess.Popen(["git", f"--git-dir={self.git}", "cat-file", "--batch"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        for path in paths:
            proc.stdin.write(f"{self.commit}:{path}\n".encode())
            proc.stdin.flush()
            header = proc.stdout.readline().decode().split()
            if len(header) != 3 or header[1] != "blob":
                proc.kill()
                sys.exit(f"{path}: not a blob at {self.commit} ({' '.join(header)}); the snapshot may lack it")
            data = proc.stdout.read(int(header[2]))
            proc.stdout.read(1)  # the newline after each object
            yield path, data
        proc.stdin.close()
        proc.wait()


def rank(source: str) -> str:
    return hashlib.sha256(f"{SEED}:{source}".encode()).hexdigest()


def take(rows: list[dict], stratum, k: int) -> list[dict]:
    """The k rows of each stratum that rank first by sha256(seed:source)."""
    groups = defaultdict(list)
    for row in rows:
        groups[stratum(row)].append(row)
    if short := {g: len(r) for g, r in groups.items() if len(r) < k}:
        sys.exit(f"strata with fewer than {k} files: {short}")
    return [r for g in sorted(groups) for r in sorted(groups[g], key=lambda r: rank(r["source"]))[:k]]


def esc(m: Mirror, name: str) -> list[dict]:
    meta = next(m.read([ESC_DIR + "esc50.csv"]))[1].decode()
    rows = [{"source": f"{ESC_DIR}audio/audio/16000/{r['filename']}", "label": r["category"], "fold": r["fold"],
             "src_file": r["src_file"], "take": r["take"], "esc10": r["esc10"]}
            for r in csv.DictReader(io.StringIO(meta))]
    if name == "esc10":
        return [r for r in rows if r["esc10"] == "True"]
    return take(rows, lambda r: (r["label"], r["fold"]), 6)


def philharmonia(m: Mirror, name: str) -> list[dict]:
    rows = []
    for p in m.ls("audio"):
        fields = Path(p).stem.split("_")
        if len(fields) == 5 and fields[0] in PHIL and fields[2] in ("1", "15", "long") \
                and fields[4] in ("normal", "arco-normal"):
            rows.append(dict(zip(("label", "pitch", "length", "dynamic", "articulation"), fields), source=p))
    return take(rows, lambda r: r["label"], 100)


def ravdess(m: Mirror, name: str) -> list[dict]:
    rows = []
    for p in m.ls("Audio_Speech_Actors_01-24"):
        f = [int(x) for x in Path(p).stem.split("-")]  # modality, channel, emotion, intensity, statement, rep, actor
        if f[:2] == [3, 1] and f[3] == 1:
            rows.append({"source": p, "label": EMOTIONS[f[2]], "actor": f"{f[6]:02d}",
                         "gender": "female" if f[6] % 2 == 0 else "male", "statement": f[4], "repetition": f[5]})
    return rows


def arabic(m: Mirror, name: str) -> list[dict]:
    rows = []
    for digit in DIGITS_EN:
        for p in m.ls(f"dataset/{digit}"):
            speaker, _, rnd = Path(p).stem.split("_")
            rows.append({"source": p, "label": digit, "speaker": speaker, "round": rnd})
    return take(rows, lambda r: (r["label"], r["speaker"]), 4)


def ukrainian(m: Mirror, name: str) -> list[dict]:
    rows = []
    for p, data in m.read(m.ls("recordings")):
        if data[4:8] == b"ftyp":  # 120 files (12 speakers) are AAC/M4A named .mp3: libsndfile cannot decode them
            continue
        speaker, digit = re.fullmatch(r"recordings/[^/]+/((?:man|woman)_\d+)_(\d+)\.mp3", p).groups()
        rows.append({"source": p, "label": str(int(digit)), "speaker": speaker, "gender": speaker.split("_")[0]})
    return rows


def bengali(m: Mirror, name: str) -> list[dict]:
    words = ("sunno", "ek", "dui", "tin", "char", "panch", "choy", "sat", "aat", "noi")
    rows = [{"source": p, "label": w, "speaker": re.split(r"[_ ]", Path(p).name)[0].lower()}
            for w in words for p in m.ls(w) if p.lower().endswith(".wav")]
    return take(rows, lambda r: r["label"], 120)


BUILDERS = {"esc50": esc, "esc10": esc, "philharmonia": philharmonia, "ravdess": ravdess, "arabic-digits": arabic,
            "ukrainian-digits": ukrainian, "bengali-digits": bengali}


def build(name: str, out: Path) -> Path:
    repo, commit = REPOS[name]
    m = Mirror(repo, commit)
    rows = sorted(BUILDERS[name](m, name), key=lambda r: r["source"])
    dest = out / name
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "audio").mkdir(parents=True)
    for i, (row, (source, data)) in enumerate(zip(rows, m.read([r["source"] for r in rows]))):
        row["path"] = f"audio/{i:05d}.wav"
        if source.lower().endswith(".wav"):
            (dest / row["path"]).write_bytes(data)
        else:  # mp3 -> 16-bit wav at the file's own rate
            audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
            sf.write(dest / row["path"], audio, rate, subtype="PCM_16")
    extras = [k for k in rows[0] if k not in ("path", "label", "source")]
    with open(dest / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "label", *extras, "source"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in writer.fieldnames} for r in rows)
    print(f"{name}: {len(rows)} clips, {len({r['label'] for r in rows})} classes -> {dest / 'manifest.csv'}"
          f" (from {repo}@{commit[:12]})")
    return dest


def verify(dest: Path) -> None:
    with open(dest / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    seconds, rates, channels, bad = [], Counter(), Counter(), []
    for r in rows:
        try:
            audio, rate = sf.read(dest / r["path"], dtype="float32", always_2d=True)
        except Exception as e:  # noqa: BLE001 - report every undecodable file
            bad.append(f"{r['path']}: {e}")
            continue
        seconds.append(len(audio) / rate)
        rates[rate] += 1
        channels[audio.shape[1]] += 1
    counts = Counter(r["label"] for r in rows)
    s = np.array(seconds or [np.nan])
    print(f"{dest.name}: {len(rows)} clips, {len(counts)} classes, {len(bad)} undecodable; per class "
          f"{min(counts.values())}-{max(counts.values())}: {dict(sorted(counts.items()))}")
    print(f"  seconds min/median/max {s.min():.2f}/{np.median(s):.2f}/{s.max():.2f}; rates {dict(rates)};"
          f" channels {dict(channels)}")
    for line in bad[:10]:
        print("  UNDECODABLE", line)


def main() -> None:
    global MIRRORS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set", choices=[*REPOS, "all"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "real")
    parser.add_argument("--mirrors", type=Path, default=MIRRORS)
    parser.add_argument("--verify", action="store_true", help="decode every file and print per-set statistics")
    args = parser.parse_args()
    MIRRORS = args.mirrors
    for name in REPOS if args.set == "all" else [args.set]:
        dest = build(name, args.out)
        if args.verify:
            verify(dest)


if __name__ == "__main__":
    main()
