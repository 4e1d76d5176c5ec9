"""Audio-health issues of each clip, from the samples the decoding workers already hold.

Notation: N clips, T samples of one clip at its native rate, C channels, F analysis frames of
N_FFT samples. `clip_health(data (T, C), rate)` runs in the DataLoader worker on the decoded file
before mixing and resampling, and costs O(T C): a few passes over the samples plus one FFT of at
most MAX_FRAMES frames, whatever the clip's length. It returns a `ClipHealth` of plain numbers;
`clip_issues` applies the per-clip rules, `dataset_issues` the rules that need every clip (a sample
rate or channel count unlike the majority's), and `issue_table` gives the rows of audio_issues.csv.

Every issue is (type, value, threshold): the measured value and the limit it crossed, in one unit:
share of samples (clipped), dBFS (silent), full scale (dc_offset, identical_channels), Hz
(narrowband, unusual_sample_rate), channels (unusual_channels). Thresholds were checked against all
3,000 real FSDD clips (8 kHz, 16-bit mono): see each constant's comment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np

# Clipping: samples at the rail. 8-bit PCM's highest code decodes to 127/128 = 0.992, 16-bit's to
# 0.99997; a float file may exceed 1 (it clips on conversion), so everything >= 0.99 counts.
CLIP_LEVEL = 0.99
# A few isolated peaks touching full scale are inaudible (5 of jackson's "6" clips in FSDD have 1-3
# such samples, share <= 0.00054); when >= 0.1% of the samples sit there, the waveform is flattened.
CLIPPED_SHARE = 0.001
# RMS over the whole clip below -60 dBFS: quieter than a quiet room's noise floor in an ordinary
# recording, so nothing usable was recorded. The quietest real FSDD clip is -53.4 dBFS (theo).
SILENT_DBFS = -60.0
LEVEL_FLOOR_DBFS = -200.0  # what digital silence (RMS 0) reads as, instead of -inf
# DC offset (|mean| of a channel, in full scale) above the silence level, 10^(-60/20) = 0.001:
# the offset alone is louder than a silent clip, so the clip's pauses visibly sit off zero and a cut
# clicks. Real FSDD: every one of nicolas's 500 clips has an offset of 0.0068-0.0080, there even in
# the pauses (his recording chain passed DC); lucas's clips range from 0 to 0.0044 (5 above the
# threshold, the offset present across each clip; the next at 0.00093); the other four speakers stay
# <= 0.0004.
# Those 505 clips are flagged: they do have the offset.
DC_OFFSET = 10 ** (SILENT_DBFS / 20)
# Bandwidth: the spectrum (mean power of F Hann-windowed frames, smoothed over SMOOTH_BINS bins) is
# "empty" where it lies more than BAND_DROP_DB below its peak; the upper band edge is the highest
# frequency that is not. 60 dB: at -50 dB real FSDD speech already reads as band-limited (edge as low
# as 0.55 of Nyquist), at -60 dB its lowest edge is 0.92 of Nyquist.
N_FFT = 1024  # 128 ms at 8 kHz, 23 ms at 44.1 kHz; 513 bins whatever the rate
MAX_FRAMES = 64  # frames spread evenly over the clip: the FFT sees at most 64 * 1024 samples per channel
SMOOTH_BINS = 9  # ~1% of Nyquist: one noisy bin does not move the edge
BAND_DROP_DB = 60.0
# Narrowband: the edge below 0.8 of Nyquist. A clip recorded at its rate keeps energy up to its
# anti-alias filter (3.4 / 4 kHz = 0.85 of Nyquist even for telephone-band audio at 8 kHz, before
# its roll-off; real FSDD's lowest edge is 0.92). Audio upsampled 2x or more keeps none above the old Nyquist: FSDD upsampled
# to 16/22.05/44.1/48 kHz edges at <= 0.76/0.55/0.28/0.26 of the new Nyquist even through
# torchaudio's leaky default resampler (<= 0.63 with scipy's resample_poly or sox). Not measured here:
# a lossy codec's low-pass (LAME at 128 kbit/s, ~17 kHz = 0.77 of 22.05 kHz) reads as narrowband too,
# which it is; very clean high-rate audio with nothing within 60 dB of its peak near Nyquist would too.
NARROWBAND_FRACTION = 0.8
# Identical channels: every channel within one 16-bit step of the first: a mono signal written to
# two channels (the rounding of each write may differ by one step), i.e. stereo that is not.
IDENTICAL_TOLERANCE = 2.0 ** -15
# A sample rate or channel count is unusual when at most 5% of the clips share it while another value
# is held by more than half: a few clips from another source. An even split is a mixed dataset, and
# no clip in it is the odd one out.
UNUSUAL_SHARE = 0.05
MAJORITY_SHARE = 0.5

CLIP_ISSUE_TYPES = ("clipped", "silent", "dc_offset", "narrowband", "identical_channels")
DATASET_ISSUE_TYPES = ("unusual_sample_rate", "unusual_channels")
ISSUE_COLUMNS = ("row", "type", "value", "threshold")

Issue = tuple[str, float, float]  # (type, value, threshold)


@dataclass(frozen=True)
class ClipHealth:
    rate: int  # native sample rate, Hz
    channels: int  # C
    frames: int  # T, samples per channel that were analysed
    peak: float  # max |sample|, full scale = 1
    clipped_share: float  # share of the T * C samples with |x| >= CLIP_LEVEL
    level_dbfs: float  # RMS over all samples, dBFS (LEVEL_FLOOR_DBFS for digital silence)
    dc_offset: float  # max over channels of |mean|, full scale
    bandwidth_hz: float  # upper band edge (BAND_DROP_DB below the spectral peak); NaN: no signal
    channel_difference: float  # max |x_c - x_0| over channels c; NaN for mono


def clip_health(data: np.ndarray, rate: int) -> ClipHealth:
    """Health of one decoded clip: `data` (T, C) float at its native `rate`, finite, T >= 1."""
    _check(data, rate)
    t, c = data.shape
    flat = data.reshape(-1)  # (T * C,) a view: soundfile returns C-contiguous frames
    peak = max(float(flat.max()), -float(flat.min()))
    clipped = np.count_nonzero(flat >= CLIP_LEVEL) + np.count_nonzero(flat <= -CLIP_LEVEL)
    mean_square = float(np.dot(flat, flat)) / flat.size  # BLAS dot: no (T * C) temporary
    level = 10 * np.log10(mean_square) if mean_square > 0 else LEVEL_FLOOR_DBFS
    # per channel as a 1-D strided view: numpy's pairwise sum, 30x faster than mean(axis=0) on (T, C)
    dc = max(abs(float(data[:, i].sum())) for i in range(c)) / t
    diff = float("nan")
    if c > 1:
        diff = max(float(np.abs(data[:, i] - data[:, 0]).max()) for i in range(1, c))
    return ClipHealth(rate=int(rate), channels=int(c), frames=int(t), peak=peak,
                      clipped_share=float(clipped / flat.size), level_dbfs=max(float(level), LEVEL_FLOOR_DBFS),
                      dc_offset=dc, bandwidth_hz=_band_edge(data, rate), channel_difference=diff)


def clip_issues(h: ClipHealth) -> list[Issue]:
    """The per-clip problems of `h`, in CLIP_ISSUE_TYPES order: [(type, value, threshold)]."""
    nyquist_edge = NARROWBAND_FRACTION * h.rate / 2
    checks = [
        ("clipped", h.clipped_share, CLIPPED_SHARE, h.clipped_share >= CLIPPED_SHARE),
        ("silent", h.level_dbfs, SILENT_DBFS, h.level_dbfs < SILENT_DBFS),
        ("dc_offset", h.dc_offset, DC_OFFSET, h.dc_offset > DC_OFFSET),
        # NaN (no signal to measure) compares False: a silent clip is reported as silent only
        ("narrowband", h.bandwidth_hz, nyquist_edge, h.bandwidth_hz < nyquist_edge),
        # NaN for mono compares False
        ("identical_channels", h.channel_difference, IDENTICAL_TOLERANCE,
         h.channel_difference <= IDENTICAL_TOLERANCE),
    ]
    return [(name, float(value), float(threshold)) for name, value, threshold, hit in checks if hit]


def dataset_issues(healths: list[ClipHealth]) -> list[list[Issue]]:
    """Per clip (N lists, in input order): a sample rate or channel count unlike the majority's.

    value = the clip's rate (Hz) or channel count, threshold = the majority's.
    """
    out: list[list[Issue]] = [[] for _ in healths]
    for name, values in (("unusual_sample_rate", [h.rate for h in healths]),
                         ("unusual_channels", [h.channels for h in healths])):
        counts = Counter(values)
        if not counts:
            continue
        majority, held = counts.most_common(1)[0]  # ties: the value seen first
        if held <= MAJORITY_SHARE * len(values):
            continue  # no majority: a mixed dataset has no odd ones out
        rare = {v for v, n in counts.items() if n <= UNUSUAL_SHARE * len(values)}
        for i, v in enumerate(values):
            if v in rare:
                out[i].append((name, float(v), float(majority)))
    return out


def issue_table(healths: Mapping[int, ClipHealth]):
    """The rows of audio_issues.csv: a DataFrame `row, type, value, threshold`, by row then type.

    `healths` maps manifest row -> ClipHealth for every clip that was decoded (skipped clips have
    none, and take no part in the majority rules).
    """
    import pandas as pd  # here, not at the top: the decoding workers import this module

    rows = sorted(healths)
    found = dataset_issues([healths[r] for r in rows])  # (N,) lists
    records = [(r, *issue) for r, extra in zip(rows, found) for issue in clip_issues(healths[r]) + extra]
    table = pd.DataFrame(records, columns=list(ISSUE_COLUMNS))
    return table.astype({"row": "int64", "type": "object", "value": "float64", "threshold": "float64"})


def _band_edge(data: np.ndarray, rate: int) -> float:
    """Upper band edge in Hz of the channel mean; NaN when the frames hold no signal at all."""
    t = data.shape[0]
    frames = min(MAX_FRAMES, 1 + max(t - N_FFT, 0) // (N_FFT // 2))  # F: hop >= N_FFT / 2
    starts = np.linspace(0, max(t - N_FFT, 0), frames).round().astype(np.int64)  # (F,)
    idx = np.minimum(starts[:, None] + np.arange(N_FFT), t - 1)  # (F, N_FFT)
    x = data[idx].mean(axis=2, dtype=np.float64)  # (F, N_FFT) channels mixed; only F * N_FFT samples
    if t < N_FFT:
        x[:, t:] = 0.0  # a short clip: zero-padded, not repeated
        x[:, :t] -= x[:, :t].mean(axis=1, keepdims=True)
    else:
        x -= x.mean(axis=1, keepdims=True)  # DC is reported apart; here it would only set the peak
    power = np.abs(np.fft.rfft(x * np.hanning(N_FFT), axis=1)) ** 2  # (F, N_FFT // 2 + 1)
    spectrum = np.convolve(power.mean(axis=0), np.ones(SMOOTH_BINS) / SMOOTH_BINS, mode="same")  # (bins,)
    if not spectrum.max() > 0:
        return float("nan")
    edge = np.flatnonzero(spectrum >= spectrum.max() * 10 ** (-BAND_DROP_DB / 10))[-1]
    return float(edge / (len(spectrum) - 1) * rate / 2)


def _check(data: np.ndarray, rate: int) -> None:
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.dtype.kind != "f":
        raise ValueError(f"clip_health takes float samples shaped (T, C) (soundfile's always_2d=True); "
                         f"got {getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"clip_health needs at least one sample and one channel; got shape {data.shape}")
    if not rate > 0:
        raise ValueError(f"sample rate must be positive; got {rate}")


META_PREFIX = "health_"  # the embedding cache keeps each clip's ClipHealth as text beside its embedding


def to_meta(h: ClipHealth) -> dict[str, str]:
    """`h` as {name: text} for the cache (cache.py stores per-clip facts as strings)."""
    return {META_PREFIX + k: repr(v) for k, v in asdict(h).items()}


def from_meta(meta: Mapping[str, str]) -> ClipHealth | None:
    """The ClipHealth that `to_meta` stored, or None where the cache holds none (an older shard)."""
    values = {f.name: meta.get(META_PREFIX + f.name, "") for f in fields(ClipHealth)}
    if "" in values.values():
        return None
    return ClipHealth(**{f.name: (int if f.type in ("int", int) else float)(values[f.name]) for f in fields(ClipHealth)})
