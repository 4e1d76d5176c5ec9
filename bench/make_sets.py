"""Build evaluation datasets on disk from real audio: 16-bit wav clips plus `manifest.csv`.

    python bench/make_sets.py SET --out DIR [--n N] [--seed 0] [--voices V] [--minutes LO HI] [--jobs J]

Every set writes DIR/manifest.csv with columns `path,label` (paths relative to the manifest, except
the two FSDD sets, which point at the FSDD files themselves by absolute path and copy no audio),
then extra columns, and DIR/build.json with the resolved options, seed, tool versions and seconds.
`audit --data DIR/manifest.csv` reads it as is. The same seed builds the same set, byte for byte.

  set            N (default)           label            extra columns            audio
  fsdd-digits    3,000 FSDD clips      digit            speaker, take            FSDD's own 8 kHz files
  fsdd-speakers  3,000 FSDD clips      speaker          digit, take              FSDD's own 8 kHz files
  words          20 words x 60 voices  word             voice, accent, variant,  espeak-ng -> sox, 16 kHz,
                 = 1,200                                noise, snr_db, seconds   white/pink noise 20-30 dB SNR
  multilabel     1,500                 its digits,      speaker, sequence,       2-3 distinct digits of one
                                       sorted: "3;7"    sources                  FSDD speaker, 16 kHz
  multilabel-    1,500                 its words,       voice, sequence,         2-3 distinct words of one
  words                                sorted           sources                  espeak-ng voice (from a
                                                                                 built words set: --words)
  long           40 files of 2-5 min   the digit said   speaker, seconds,        one FSDD speaker's digits,
                                       most             dominant_share           16 kHz
  long-switch    1 file of 5 min       the last 4       speaker, first_digit,    minute 1: digit A repeated,
                                       minutes' digit   switch_seconds, seconds  minutes 2-5: digit B

Built clips use neutral names (clips/00000.wav) so a flipped manifest label leaks nowhere. Notation:
N clips, T samples at SAMPLE_RATE. FSDD is found like the tests find it: $AUDIT_FSDD_DIR, then
../shared/data/fsdd beside the repository (files directly there or in recordings/), else the pinned
download of audit.fsdd (2,500 of FSDD's 3,000 clips).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly  # exact rational-ratio resampling with its anti-alias filter
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16_000  # Hz: what audit's encoders read; every clip built here is written at this rate
SUBTYPE = "PCM_16"  # 16-bit wav
FSDD_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[a-z]+)_(?P<take>\d+)\.wav$")  # 7_jackson_32.wav
DIGITS = tuple(str(d) for d in range(10))

# words: the 20 core command words of Speech Commands v2, so results read against that benchmark.
WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
         "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORDS_VOICES = 60  # distinct synthetic speakers: 20 x 60 = 1,200 clips by default
# espeak-ng's own English voices (`espeak-ng --voices=en`). The mb/* voices are left out: they need
# MBROLA, which Debian's espeak-ng does not pull in (they fail with "Cannot find MBROLA voice file").
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-us-nyc")
# Voice variants (`espeak-ng --voices=variant`, files under !v/) that still sound like a person;
# "" is the accent's plain voice. An unknown variant is silently ignored by espeak-ng, so each one
# is checked against the installed list before use.
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
            "croak", "klatt", "klatt2", "klatt3", "grandpa", "david", "linda", "steph")
SPEED_WPM = (120, 210)  # espeak-ng -s, words per minute (its default 175)
PITCH = (20, 80)  # espeak-ng -p, 0..99 (default 50)
AMPLITUDE = (60, 140)  # espeak-ng -a, 0..200 (default 100): level differences between voices
SNR_DB = (20.0, 30.0)  # light background noise per clip, uniform in this range
PEAK = 0.99  # full scale is 1.0; louder clips are scaled down rather than clipped

MULTILABEL_CLIPS = 1_500
MULTILABEL_DIGITS = (2, 3)  # distinct digits per clip, drawn uniformly
GAP_SECONDS = (0.1, 0.2)  # pause between concatenated digits
GAP_RMS = 10 ** (-60 / 20)  # -60 dBFS white noise in the pauses: a quiet room, not digital silence

LONG_FILES = 40
LONG_MINUTES = (2.0, 5.0)  # each long file's length, uniform
LONG_SHARE = (0.5, 0.8)  # chance that each utterance is the dominant digit (else one of the other 9)
LONG_GAP_SECONDS = (0.2, 0.8)  # pauses in a long recording, more like reading a list aloud
# audit once read only a clip's first 60 s; a file whose first minute says one digit and whose last
# four say another shows whether windowing (audit/windows.py) judges the whole recording.
SWITCH_SECONDS = 300.0
SWITCH_FIRST_SECONDS = 60.0


@dataclass(frozen=True)
class Built:
    """What one build wrote: the manifest, its N rows, and how long it took."""

    name: str
    manifest: Path
    clips: int
    labels: int
    audio_seconds: float
    seconds: float

    def summary(self) -> str:
        return (f"{self.name}: {self.clips} clips, {self.labels} labels, {self.audio_seconds / 60:.1f} min of audio "
                f"-> {self.manifest} in {self.seconds:.1f} s")


@dataclass(frozen=True)
class FsddClip:
    path: Path
    digit: str
    speaker: str
    take: int


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an espeak-ng accent and variant at a fixed speed, pitch and level."""

    accent: str
    variant: str
    speed: int
    pitch: int
    amplitude: int

    @property
    def name(self) -> str:
        return f"{self.accent}+{self.variant or 'default'}-s{self.speed}-p{self.pitch}-a{self.amplitude}"

    def espeak_args(self) -> list[str]:
        voice = f"{self.accent}+{self.variant}" if self.variant else self.accent
        return ["-v", voice, "-s", str(self.speed), "-p", str(self.pitch), "-a", str(self.amplitude)]


# ---------------------------------------------------------------- FSDD


def fsdd_dir() -> Path:
    """The folder holding FSDD's wav files: $AUDIT_FSDD_DIR, ../shared/data/fsdd, else a download."""
    if os.environ.get("AUDIT_FSDD_DIR"):
        root = Path(os.environ["AUDIT_FSDD_DIR"])
    elif (ROOT.parent / "shared" / "data" / "fsdd").is_dir():
        root = ROOT.parent / "shared" / "data" / "fsdd"
    else:
        from audit.fsdd import fsdd_files

        return fsdd_files()[0].parent
    return root / "recordings" if (root / "recordings").is_dir() else root


def fsdd_clips(folder: Path | None = None) -> list[FsddClip]:
    """Every `{digit}_{speaker}_{take}.wav` in the folder, sorted by name."""
    folder = Path(folder) if folder else fsdd_dir()
    clips = [FsddClip(folder / n, m["digit"], m["speaker"], int(m["take"]))
             for n in sorted(os.listdir(folder)) if (m := FSDD_NAME.match(n))]
    if not clips:
        raise ValueError(f"no FSDD files ({{digit}}_{{speaker}}_{{n}}.wav) in {folder}; set AUDIT_FSDD_DIR")
    return clips


@lru_cache(maxsize=None)  # each FSDD file is reused many times; all 3,000 at 16 kHz take ~90 MB
def read_16k(path: Path) -> np.ndarray:
    """A clip as mono float32 at SAMPLE_RATE."""
    wav, rate = sf.read(path, dtype="float32", always_2d=True)  # (T, C)
    wav = wav.mean(axis=1)  # (T,)
    if rate != SAMPLE_RATE:
        g = gcd(SAMPLE_RATE, rate)
        wav = resample_poly(wav, SAMPLE_RATE // g, rate // g).astype(np.float32)  # (T * 16k / rate,)
    return wav


def by_speaker_digit(clips: list[FsddClip]) -> dict[tuple[str, str], list[FsddClip]]:
    groups: dict[tuple[str, str], list[FsddClip]] = {}
    for c in clips:
        groups.setdefault((c.speaker, c.digit), []).append(c)
    return groups


# ---------------------------------------------------------------- shared helpers


def subset(n_all: int, n: int | None, rng: np.random.Generator) -> list[int]:
    """n of range(n_all), drawn without replacement, in their original order (all when n is None)."""
    if n is None or n >= n_all:
        return list(range(n_all))
    return sorted(rng.choice(n_all, size=n, replace=False).tolist())


def clip_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator for one clip, independent of build order and of how many workers run."""
    return np.random.default_rng([seed, *keys])


def noise(kind: str, t: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white or pink (1/f power) noise, (T,)."""
    if t == 0:
        return np.zeros(0, np.float32)
    white = rng.standard_normal(t)
    if kind == "pink":
        spectrum = np.fft.rfft(white)
        f = np.arange(len(spectrum))
        spectrum[1:] /= np.sqrt(f[1:])  # power falls as 1/f
        spectrum[0] = 0
        white = np.fft.irfft(spectrum, n=t)
    return (white / max(np.sqrt(np.mean(white**2)), 1e-12)).astype(np.float32)


def add_noise(wav: np.ndarray, snr_db: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    rms = np.sqrt(np.mean(wav**2))
    return wav + noise(kind, len(wav), rng) * rms * 10 ** (-snr_db / 20)


def gap(rng: np.random.Generator, seconds: tuple[float, float]) -> np.ndarray:
    t = int(rng.uniform(*seconds) * SAMPLE_RATE)
    return noise("white", t, rng) * GAP_RMS  # (T,)


def write_wav(path: Path, wav: np.ndarray) -> float:
    """Writes 16-bit mono at SAMPLE_RATE, scaled down if it would clip; returns its seconds."""
    peak = float(np.max(np.abs(wav))) if len(wav) else 0.0
    if peak > PEAK:
        wav = wav * (PEAK / peak)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav, SAMPLE_RATE, subtype=SUBTYPE)
    return len(wav) / SAMPLE_RATE


def write_manifest(out: Path, rows: list[dict]) -> Path:
    path = out / "manifest.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def prepared(out: Path) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} is not empty; give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def finish(name: str, out: Path, rows: list[dict], audio_seconds: float, start: float, options: dict) -> Built:
    manifest = write_manifest(out, rows)
    built = Built(name, manifest, len(rows), len({r["label"] for r in rows}), audio_seconds,
                  time.perf_counter() - start)
    record = {**asdict(built), "manifest": str(manifest), "options": options}
    (out / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    return built


# ---------------------------------------------------------------- fsdd-digits, fsdd-speakers


def build_fsdd(out: Path, label: str, n: int | None = None, seed: int = 0, folder: Path | None = None) -> Built:
    """A manifest over FSDD's own files (absolute paths, no audio copied); label 'digit' or 'speaker'."""
    start, out = time.perf_counter(), prepared(out)
    clips = fsdd_clips(folder)
    chosen = [clips[i] for i in subset(len(clips), n, np.random.default_rng(seed))]
    other = "speaker" if label == "digit" else "digit"
    rows = [{"path": str(c.path.resolve()), "label": getattr(c, label), other: getattr(c, other), "take": c.take}
            for c in chosen]
    infos = [sf.info(c.path) for c in chosen]
    return finish(f"fsdd-{label}s", out, rows, sum(i.duration for i in infos), start,
                  {"n": n, "seed": seed, "fsdd": str(clips[0].path.parent),
                   "sample_rates": sorted({i.samplerate for i in infos})})


def build_fsdd_digits(out: Path, n: int | None = None, seed: int = 0, folder: Path | None = None) -> Built:
    return build_fsdd(out, "digit", n, seed, folder)


def build_fsdd_speakers(out: Path, n: int | None = None, seed: int = 0, folder: Path | None = None) -> Built:
    return build_fsdd(out, "speaker", n, seed, folder)


# ---------------------------------------------------------------- words (espeak-ng + sox)


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not found: apt-get install {' '.join(missing)}")


def installed_voices() -> tuple[set[str], set[str]]:
    """(accents, variants) that this espeak-ng has, from `--voices=en` and `--voices=variant`."""
    def table(arg: str) -> list[str]:
        text = subprocess.run(["espeak-ng", f"--voices={arg}"], capture_output=True, text=True, check=True).stdout
        return [line for line in text.splitlines()[1:] if line.strip()]

    # columns: Pty Language Age/Gender VoiceName File [(other language priority)...]; `-v en` is
    # the alias "(en 2)" of the en-gb row, so the aliases count too.
    accents = {name for line in table("en") if line.split()[4].startswith("gmw/")
               for name in [line.split()[1], *re.findall(r"\((\S+) \d+\)", line)]}
    variants = {line.split()[4][3:] for line in table("variant") if line.split()[4].startswith("!v/")}
    return accents, variants | {""}


def make_voices(n: int, seed: int) -> list[Voice]:
    """n distinct (accent, variant) pairs, each at its own seeded speed, pitch and amplitude."""
    accents, variants = installed_voices()
    pairs = [(a, v) for a in ACCENTS if a in accents for v in VARIANTS if v in variants]
    if n > len(pairs):
        raise ValueError(f"--voices {n}: this espeak-ng has only {len(pairs)} accent+variant pairs")
    rng = np.random.default_rng([seed, 1])
    chosen = [pairs[i] for i in rng.permutation(len(pairs))[:n]]
    return [Voice(a, v, int(rng.integers(*SPEED_WPM, endpoint=True)), int(rng.integers(*PITCH, endpoint=True)),
                  int(rng.integers(*AMPLITUDE, endpoint=True))) for a, v in chosen]


def speak(word: str, voice: Voice) -> np.ndarray:
    """espeak-ng's 22,050 Hz wav -> sox -> mono float32 at SAMPLE_RATE, (T,)."""
    wav = subprocess.run(["espeak-ng", *voice.espeak_args(), "--stdout", word],
                         capture_output=True, check=True).stdout
    raw = subprocess.run(["sox", "-t", "wav", "-", "-t", "raw", "-e", "floating-point", "-b", "32",
                          "-c", "1", "-r", str(SAMPLE_RATE), "-"], input=wav, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.float32)


def _word_clip(task: tuple[int, str, Voice, int, Path]) -> dict:
    i, word, voice, seed, out = task
    rng = clip_rng(seed, i)
    kind = "pink" if rng.random() < 0.5 else "white"
    snr = rng.uniform(*SNR_DB)
    wav = add_noise(speak(word, voice), snr, kind, rng)
    seconds = write_wav(out / "clips" / f"{i:05d}.wav", wav)
    return {"path": f"clips/{i:05d}.wav", "label": word, "voice": voice.name, "accent": voice.accent,
            "variant": voice.variant or "default", "noise": kind, "snr_db": round(snr, 1), "seconds": seconds}


def build_words(out: Path, n: int | None = None, seed: int = 0, voices: int = WORDS_VOICES,
                jobs: int = 2) -> Built:
    """len(WORDS) words x `voices` synthetic voices (or a seeded n of them); label = word."""
    require_tools("espeak-ng", "sox")
    start, out = time.perf_counter(), prepared(out)
    cast = make_voices(voices, seed)
    grid = [(v, w) for v in cast for w in WORDS]
    chosen = subset(len(grid), n, np.random.default_rng([seed, 2]))
    tasks = [(i, grid[g][1], grid[g][0], seed, out) for i, g in enumerate(chosen)]
    bar = dict(total=len(tasks), desc="words", unit="clip", leave=False)
    if jobs > 1:
        with multiprocessing.Pool(jobs) as pool:
            rows = list(tqdm(pool.imap(_word_clip, tasks, chunksize=8), **bar))
    else:
        rows = [_word_clip(t) for t in tqdm(tasks, **bar)]
    versions = {t: subprocess.run([t, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
                for t in ("espeak-ng", "sox")}
    return finish("words", out, rows, sum(r["seconds"] for r in rows), start,
                  {"n": n, "seed": seed, "voices": voices, "jobs": jobs, "sample_rate": SAMPLE_RATE, **versions})


# ---------------------------------------------------------------- multilabel


def build_multilabel(out: Path, n: int = MULTILABEL_CLIPS, seed: int = 0, folder: Path | None = None) -> Built:
    """Clips of 2-3 distinct digits said by one FSDD speaker; label = the digits, sorted, joined by ';'."""
    start, out = time.perf_counter(), prepared(out)
    clips = fsdd_clips(folder)
    groups = by_speaker_digit(clips)
    speakers = sorted({s for s, _ in groups})
    rows, total = [], 0.0
    for i in tqdm(range(n), desc="multilabel", unit="clip", leave=False):
        rng = clip_rng(seed, i)
        speaker = speakers[rng.integers(len(speakers))]
        k = int(rng.integers(MULTILABEL_DIGITS[0], MULTILABEL_DIGITS[1], endpoint=True))
        sequence = [DIGITS[d] for d in rng.choice(len(DIGITS), size=k, replace=False)]
        sources = [groups[speaker, d][rng.integers(len(groups[speaker, d]))] for d in sequence]
        parts = [read_16k(sources[0].path)]
        for s in sources[1:]:
            parts += [gap(rng, GAP_SECONDS), read_16k(s.path)]
        total += write_wav(out / "clips" / f"{i:05d}.wav", np.concatenate(parts))
        rows.append({"path": f"clips/{i:05d}.wav", "label": ";".join(sorted(sequence)), "speaker": speaker,
                     "sequence": " ".join(sequence), "sources": ";".join(s.path.name for s in sources)})
    return finish("multilabel", out, rows, total, start,
                  {"n": n, "seed": seed, "fsdd": str(clips[0].path.parent), "sample_rate": SAMPLE_RATE})


def build_multilabel_words(out: Path, words: Path, n: int = MULTILABEL_CLIPS, seed: int = 0) -> Built:
    """Clips of 2-3 distinct words said by one espeak-ng voice of the words set in `words` (its manifest);
    label = the words, sorted, joined by ';'. Noise: each word keeps its own (20-30 dB SNR)."""
    start, out = time.perf_counter(), prepared(out)
    with open(words / "manifest.csv", newline="") as f:
        source = list(csv.DictReader(f))
    if not source:
        raise FileNotFoundError(f"{words / 'manifest.csv'}: build the words set first")
    by_voice: dict[str, dict[str, str]] = {}
    for row in source:
        by_voice.setdefault(row["voice"], {})[row["label"]] = row["path"]
    voices = sorted(v for v, said in by_voice.items() if len(said) >= MULTILABEL_DIGITS[1])
    rows, total = [], 0.0
    for i in tqdm(range(n), desc="multilabel-words", unit="clip", leave=False):
        rng = clip_rng(seed, i)
        voice = voices[rng.integers(len(voices))]
        said = sorted(by_voice[voice])
        k = int(rng.integers(MULTILABEL_DIGITS[0], MULTILABEL_DIGITS[1], endpoint=True))
        sequence = [said[j] for j in rng.choice(len(said), size=k, replace=False)]
        paths = [words / by_voice[voice][w] for w in sequence]
        parts = [read_16k(paths[0])]
        for p in paths[1:]:
            parts += [gap(rng, GAP_SECONDS), read_16k(p)]
        total += write_wav(out / "clips" / f"{i:05d}.wav", np.concatenate(parts))
        rows.append({"path": f"clips/{i:05d}.wav", "label": ";".join(sorted(sequence)), "voice": voice,
                     "sequence": " ".join(sequence), "sources": ";".join(p.name for p in paths)})
    return finish("multilabel-words", out, rows, total, start,
                  {"n": n, "seed": seed, "words": str(words), "sample_rate": SAMPLE_RATE})


# ---------------------------------------------------------------- long, long-switch


Picker = Callable[[np.random.Generator], FsddClip]  # draws the next utterance


def speak_for(seconds: float, pick: Picker, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Utterances from pick(rng) -> FsddClip, with pauses, filling exactly `seconds`; also seconds per digit."""
    target = int(seconds * SAMPLE_RATE)
    parts, t, per_digit = [], 0, {}
    while True:
        clip = pick(rng)
        wav, pause = read_16k(clip.path), gap(rng, LONG_GAP_SECONDS)
        if t + len(wav) > target:
            break
        parts += [wav, pause]
        t += len(wav) + len(pause)
        per_digit[clip.digit] = per_digit.get(clip.digit, 0.0) + len(wav) / SAMPLE_RATE
    if not parts:
        raise ValueError(f"{seconds:.2f} s is too short to hold one spoken digit")
    wav = np.concatenate(parts)[:target]
    pad = noise("white", target - len(wav), rng) * GAP_RMS  # room tone up to the exact length
    return np.concatenate([wav, pad]), per_digit


def build_long(out: Path, n: int = LONG_FILES, seed: int = 0, minutes: tuple[float, float] = LONG_MINUTES,
               folder: Path | None = None) -> Built:
    """n recordings, each of one FSDD speaker reading digits for 2-5 min, most often one digit (the label)."""
    start, out = time.perf_counter(), prepared(out)
    clips = fsdd_clips(folder)
    groups = by_speaker_digit(clips)
    speakers = sorted({s for s, _ in groups})
    order = np.random.default_rng([seed, 3])
    speaker_cycle = [speakers[j] for j in order.permutation(len(speakers))]
    digit_cycle = [DIGITS[j] for j in order.permutation(len(DIGITS))]
    rows, total = [], 0.0
    for i in tqdm(range(n), desc="long", unit="file", leave=False):
        rng = clip_rng(seed, i)
        speaker, dominant = speaker_cycle[i % len(speakers)], digit_cycle[i % len(DIGITS)]
        share = rng.uniform(*LONG_SHARE)
        others = [d for d in DIGITS if d != dominant]

        def pick(r: np.random.Generator) -> FsddClip:
            digit = dominant if r.random() < share else others[r.integers(len(others))]
            takes = groups[speaker, digit]
            return takes[r.integers(len(takes))]

        wav, per_digit = speak_for(rng.uniform(*minutes) * 60, pick, rng)
        # The label is the digit with the most speech time: `dominant` unless a file is only seconds long.
        label = max(per_digit, key=per_digit.get)
        seconds = write_wav(out / "clips" / f"{i:05d}.wav", wav)
        total += seconds
        rows.append({"path": f"clips/{i:05d}.wav", "label": label, "speaker": speaker, "seconds": seconds,
                     "dominant_share": round(per_digit[label] / sum(per_digit.values()), 3)})
    return finish("long", out, rows, total, start, {"n": n, "seed": seed, "minutes": list(minutes),
                                                    "fsdd": str(clips[0].path.parent), "sample_rate": SAMPLE_RATE})


def build_long_switch(out: Path, seed: int = 0, speaker: str | None = None, first_digit: str | None = None,
                      second_digit: str | None = None, total_seconds: float = SWITCH_SECONDS,
                      first_seconds: float = SWITCH_FIRST_SECONDS, folder: Path | None = None) -> Built:
    """One file: `first_digit` repeated for its first minute, `second_digit` for the other four; label =
    second_digit. What is not given is drawn from the seed."""
    start, out = time.perf_counter(), prepared(out)
    clips = fsdd_clips(folder)
    groups = by_speaker_digit(clips)
    rng = np.random.default_rng([seed, 4])
    speakers = sorted({s for s, _ in groups})
    speaker = speaker or speakers[rng.integers(len(speakers))]
    first_digit = first_digit or DIGITS[rng.integers(len(DIGITS))]
    second_digit = second_digit or [d for d in DIGITS if d != first_digit][rng.integers(len(DIGITS) - 1)]
    if (speaker, first_digit) not in groups or (speaker, second_digit) not in groups or first_digit == second_digit:
        raise ValueError(f"long-switch: need two different digits of one FSDD speaker, got {speaker} "
                         f"{first_digit}->{second_digit}")

    def repeat(digit: str) -> Picker:
        return lambda r: groups[speaker, digit][r.integers(len(groups[speaker, digit]))]

    head, _ = speak_for(first_seconds, repeat(first_digit), rng)
    tail, _ = speak_for(total_seconds - first_seconds, repeat(second_digit), rng)
    seconds = write_wav(out / "clips" / "00000.wav", np.concatenate([head, tail]))
    rows = [{"path": "clips/00000.wav", "label": second_digit, "speaker": speaker, "first_digit": first_digit,
             "switch_seconds": first_seconds, "seconds": seconds}]
    return finish("long-switch", out, rows, seconds, start,
                  {"seed": seed, "total_seconds": total_seconds, "first_seconds": first_seconds,
                   "fsdd": str(clips[0].path.parent), "sample_rate": SAMPLE_RATE})


# ---------------------------------------------------------------- CLI


SETS = ("fsdd-digits", "fsdd-speakers", "words", "multilabel", "multilabel-words", "long", "long-switch")


def build(args: argparse.Namespace) -> Built:
    by_set = {
        "fsdd-digits": lambda: build_fsdd_digits(args.out, args.n, args.seed),
        "fsdd-speakers": lambda: build_fsdd_speakers(args.out, args.n, args.seed),
        "words": lambda: build_words(args.out, args.n, args.seed, args.voices, args.jobs),
        "multilabel": lambda: build_multilabel(args.out, args.n or MULTILABEL_CLIPS, args.seed),
        "multilabel-words": lambda: build_multilabel_words(args.out, args.words, args.n or MULTILABEL_CLIPS, args.seed),
        "long": lambda: build_long(args.out, args.n or LONG_FILES, args.seed, tuple(args.minutes)),
        "long-switch": lambda: build_long_switch(args.out, args.seed),
    }
    return by_set[args.set]()


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("set", choices=SETS, help="which dataset to build")
    parser.add_argument("--out", type=Path, required=True, help="a new or empty folder for clips/ and manifest.csv")
    parser.add_argument("--n", type=positive_int, help="clips (files for long) to build; default: the set's full size "
                        f"(FSDD: all; words: {len(WORDS)} x --voices; multilabel: {MULTILABEL_CLIPS}; "
                        f"long: {LONG_FILES}); ignored by long-switch")
    parser.add_argument("--seed", type=int, default=0, help="the same seed builds the same set")
    parser.add_argument("--words", type=Path, default=Path("bench/out/sets/words"),
                        help="multilabel-words: the folder of a built words set")
    parser.add_argument("--voices", type=positive_int, default=WORDS_VOICES, help="words: synthetic voices")
    parser.add_argument("--minutes", type=float, nargs=2, default=LONG_MINUTES, metavar=("LO", "HI"),
                        help="long: each file's length in minutes, uniform in [LO, HI]")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), choices=(1, 2),
                        help="words: worker processes")
    args = parser.parse_args(argv)
    if not 0 < args.minutes[0] <= args.minutes[1]:
        parser.error(f"--minutes {args.minutes[0]} {args.minutes[1]}: need 0 < LO <= HI")
    try:
        built = build(args)
    except (ValueError, RuntimeError, FileNotFoundError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None)
        sys.exit(f"{args.set}: {e}" + (f" ({detail.decode(errors='replace').strip()[:200]})" if detail else ""))
    print(built.summary())


if __name__ == "__main__":
    main()
