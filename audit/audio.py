"""Decode one clip into the encoder's input: mono float32 at the encoder's rate (16 kHz unless it says).

Notation: T samples. Decoding uses soundfile (libsndfile: wav/flac/ogg/mp3, 8/16/24/32-bit int and
float), which can seek and read one window of a long file without loading the rest (windows.py
decides the windows); resampling uses torchaudio's windowed-sinc resampler, the same one
SpeechBrain's own audio loader applies.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import soundfile as sf
import torch
import torchaudio

from audit import health
from audit.errors import one_line

SAMPLE_RATE = 16_000  # what every SpeechBrain VoxCeleb speaker encoder was trained on; other families say theirs
MIN_SECONDS = 0.1  # 10 fbank frames: shorter clips are too short for the encoders' dilated convs


class ClipError(Exception):
    """A clip that cannot be used, for a reason that will not change on a retry (written to skipped.csv)."""


HASH_CHUNK = 1 << 20  # bytes read at a time: hashing a long file keeps memory flat


def file_sha1(path: str) -> str:
    """SHA-1 of the file's bytes (finds byte-identical duplicates). An OSError is transient: it propagates."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def probe(path: str, offset: float = 0.0, duration: float = float("nan")) -> tuple[float, int]:
    """(duration in seconds, native sample rate), reading the header only.

    `offset`, `duration` (seconds) select a segment of the file; NaN duration: to its end.
    """
    try:
        info = sf.info(path)
    except Exception as e:  # libsndfile's errors carry no stable type across versions
        raise ClipError(f"unreadable audio: {one_line(e, 200)}") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise ClipError("empty audio (0 samples)")
    available = info.frames / info.samplerate - offset
    if available <= 0:
        raise ClipError(f"offset {offset:g} s is past the end of the file ({info.frames / info.samplerate:.2f} s)")
    seconds = min(available, duration if duration == duration else available)
    if seconds < MIN_SECONDS:
        raise ClipError(f"too short ({seconds * 1000:.0f} ms < {MIN_SECONDS * 1000:.0f} ms)")
    return seconds, info.samplerate


def load(path: str, offset: float = 0.0, duration: float = float("nan"), rate: int = SAMPLE_RATE) -> torch.Tensor:
    """The clip (or `duration` seconds of it from `offset`; NaN: to the end) as mono float32 at `rate`.  # (T,)"""
    return decode(path, offset, duration, rate)[0]


def decode(path: str, offset: float = 0.0, duration: float = float("nan"),
           rate: int = SAMPLE_RATE) -> tuple[torch.Tensor, health.ClipHealth]:
    """(the clip as load() gives it (T,), its health measured on the native samples before mixing)."""
    target = rate
    try:
        with sf.SoundFile(path) as f:
            rate = f.samplerate
            if offset:
                f.seek(min(int(round(offset * rate)), f.frames))
            frames = int(round(duration * rate)) if duration == duration else -1  # -1: to the end
            data = f.read(frames=frames, dtype="float32", always_2d=True)  # (T0, ch)
    except OSError:  # the disk, not the file: let the caller retry it another time
        raise
    except Exception as e:
        raise ClipError(f"unreadable audio: {one_line(e, 200)}") from None
    if data.shape[0] == 0:
        raise ClipError("empty audio (0 samples)")
    if data.shape[0] < MIN_SECONDS * rate:
        raise ClipError(f"too short ({data.shape[0] / rate * 1000:.0f} ms < {MIN_SECONDS * 1000:.0f} ms)")
    if not np.isfinite(data).all():
        raise ClipError("non-finite samples (NaN or inf)")
    measured = health.clip_health(data, rate)
    wav = torch.from_numpy(data.mean(axis=1))  # (T0,) channels mixed down
    if rate != target:
        wav = _resampler(rate, target)(wav)  # (T,)
    return wav, measured


@functools.lru_cache(maxsize=16)
def _resampler(rate: int, target: int) -> torchaudio.transforms.Resample:
    # One cached kernel per pair of rates: building it costs more than applying it to a short clip.
    return torchaudio.transforms.Resample(rate, target)

