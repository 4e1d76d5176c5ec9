"""Audio-health issues of each clip, from the samples the decoding workers already hold.

Notation: N clips, T samples of one clip at its native rate, C channels, F analysis frames of
N_FFT samples, Q frames of DC_FRAME_SECONDS. `clip_health(data (T, C), rate)` runs in the DataLoader
worker on the decoded file before mixing and resampling, and costs O(T C): a few passes over the
samples plus one FFT of at most MAX_FRAMES frames, whatever the clip's length. It returns a
`ClipHealth` of plain numbers. Each check answers "is this clip broken, or unlike the rest?":
`clip_issues` applies the per-clip rules (narrowband against a reference the dataset gives,
`band_references`), `dataset_issues` the rules that need every clip (a sample rate or channel count
unlike the majority's), `dataset_notes` reports once a problem most clips share (the dataset's
recording chain or encoding, not single clips'), and `issue_table` gives the rows of audio_issues.csv
without the problems a note already reports.

Every issue is (type, value, threshold): the measured value and the limit it crossed, in one unit:
share of samples (clipped), dBFS (silent), full scale (dc_offset, identical_channels), Hz
(narrowband, unusual_sample_rate), channels (unusual_channels). Thresholds were checked against all
3,000 real FSDD clips (8 kHz, 16-bit mono) and the real sets of bench/health_sets.py (sound events,
instruments decoded from mp3, speech at 48 kHz, digits in three languages; bench/RESULTS.md): see
each constant's comment.
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
# Real ESC-50 (16 kHz): 136 of 1,500 clips (9%) cross it, and they are clipped: every one peaks at
# 1.0 (median 246 samples at >= 0.9999), and 133 pile more samples into [0.99, 1] than into [0.98, 0.99).
CLIPPED_SHARE = 0.001
# RMS over the whole clip below -60 dBFS: quieter than a quiet room's noise floor in an ordinary
# recording, so nothing usable was recorded. The quietest real FSDD clip is -53.4 dBFS (theo).
SILENT_DBFS = -60.0
LEVEL_FLOOR_DBFS = -200.0  # what digital silence (RMS 0) reads as, instead of -inf
# DC offset, measured where the clip is quiet: the clip is cut into Q frames of 20 ms (longer than a
# voice's pitch period, 2.5-12 ms; shorter than a pause) and the offset is the mean of the samples of
# its quietest QUIET_SHARE of frames by AC RMS (each frame's RMS after its own mean is removed), at
# least QUIET_MIN_FRAMES of them. A voiced word's asymmetry does not count (the whole-clip mean,
# the rule before, listed 261 of 1,200 espeak-ng words and 206 of 1,200 real Bengali digits whose
# pauses are digital zero); a pause sitting off zero does, and so does an offset present everywhere.
DC_FRAME_SECONDS = 0.02
QUIET_SHARE = 0.2
QUIET_MIN_FRAMES = 4  # a 0.3 s clip has 15 frames: its 3 quietest alone would be too few to agree
# The offset must exceed the silence level, 10^(-60/20) = 0.001: the offset alone is louder than a
# silent clip, so the pauses visibly sit off zero and a cut clicks. Real FSDD: nicolas's 500 clips sit
# at 0.0060-0.0084 in their pauses, 5 of lucas's at 0.0014-0.0044; every other clip <= 0.0013.
DC_OFFSET = 10 ** (SILENT_DBFS / 20)
# ... and the quiet frames must agree on it: offset > DC_CONSISTENCY x the standard deviation of
# their means. Low-frequency sound (wind, engines, the pink noise under the espeak-ng words) moves a
# 20 ms frame's mean by more than 0.001 but not the same way in every pause; a DC offset does. Real
# FSDD: nicolas's offsets are >= 2.6 x their spread (lucas's 5: >= 24 x), while the four other clips
# above 0.001 (0.0011-0.0013, jackson and lucas) have a spread larger than their offset. Without this
# rule the quiet offset alone lists 235 of 1,200 espeak-ng words (pink or white noise added) and 257 of
# 1,500 ESC-50 clips; with it, 8 and 37 (36 of those 37 have about the same mean over the whole clip,
# 0.0011-0.18: real offsets; the 37th sits at 0.056 in its pauses only).
DC_CONSISTENCY = 2.0
# Bandwidth: the spectrum (mean power of F Hann-windowed frames, smoothed over SMOOTH_BINS bins) is
# "empty" where it lies more than BAND_DROP_DB below its peak; the upper band edge is the highest
# frequency that is not. 60 dB: at -50 dB real FSDD speech already reads as band-limited (edge as low
# as 0.55 of Nyquist), at -60 dB its lowest edge is 0.92 of Nyquist.
N_FFT = 1024  # 128 ms at 8 kHz, 23 ms at 44.1 kHz; 513 bins whatever the rate
MAX_FRAMES = 64  # frames spread evenly over the clip: the FFT sees at most 64 * 1024 samples per channel
SMOOTH_BINS = 9  # ~1% of Nyquist: one noisy bin does not move the edge
BAND_DROP_DB = 60.0
# Narrowband, absolute: the edge below 0.8 of Nyquist. A clip recorded at its rate keeps energy up to
# its anti-alias filter (3.4 / 4 kHz = 0.85 of Nyquist even for telephone-band audio at 8 kHz, before
# its roll-off; real FSDD's lowest edge is 0.92). Audio upsampled 2x or more keeps none above the old
# Nyquist: FSDD upsampled to 16/22.05/44.1/48 kHz edges at <= 0.76/0.55/0.28/0.26 of the new Nyquist
# even through torchaudio's leaky default resampler (<= 0.63 with scipy's resample_poly or sox).
NARROWBAND_FRACTION = 0.8
# Narrowband, relative: on real sets the absolute rule alone lists what is the norm there, not one
# clip's defect: 1,001 of 1,200 instrument notes decoded from mp3 (median edge 0.51 of Nyquist: the
# encoder's low-pass and the notes' own roll-off), 264 of 749 Ukrainian digits from mp3, 210 of 1,200
# Arabic digits. So a clip is narrowband only when its edge is also below NARROWBAND_RELATIVE x its
# band reference: the edge that all but UNUSUAL_SHARE of the clips of its sample rate reach (their
# 5th percentile: the odd few, as for the sample rate). Measured, this lists <= 2.3% of every real set
# (ESC-50: 35 of 1,500, the most); the 5th percentile of FSDD is 0.97 of Nyquist, of full-band 16 kHz
# words 1.0, so an upsampled clip among them (<= 0.76) is still found. A clip whose rate fewer than
# MIN_CLIPS clips share is judged against the clips of the common rates (a 5th percentile of 3 clips
# is their lowest). Most clips below NARROWBAND_FRACTION is reported once by dataset_notes.
NARROWBAND_RELATIVE = 0.8
# Identical channels: every channel within one 16-bit step of the first: a mono signal written to
# two channels (the rounding of each write may differ by one step), i.e. stereo that is not.
IDENTICAL_TOLERANCE = 2.0 ** -15
# A sample rate or channel count is unusual when at most 5% of the clips share it while another value
# is held by more than half: a few clips from another source. An even split is a mixed dataset, and
# no clip in it is the odd one out.
UNUSUAL_SHARE = 0.05
# More than half of the clips with one problem: the dataset's, reported once (dataset_notes), not clip
# by clip. Where a real set shared a problem it was 59-98% of its clips (the issue's reports: 236 of
# 400 Freesound clips and 198 of 300 instrument notes narrowband, 3,032 of 3,082 spoken digits with a
# DC offset; measured here: 1,001 of 1,200 Philharmonia notes narrowband); one speaker's recording
# chain in a set of many (nicolas: 500 of FSDD's 3,000, 17%) stays clip by clip, naming the clips to fix.
MAJORITY_SHARE = 0.5
MIN_CLIPS = round(1 / UNUSUAL_SHARE)  # 20: fewer clips have no "odd few" and no majority to report

CLIP_ISSUE_TYPES = ("clipped", "silent", "dc_offset", "narrowband", "identical_channels")
DATASET_ISSUE_TYPES = ("unusual_sample_rate", "unusual_channels")
ISSUE_COLUMNS = ("row", "type", "value", "threshold")
# A dataset-level note per type: (unit of its median value, how the text shows it, where it comes from)
NOTES = {"clipped": ("share of samples", "median {:.2%} of the samples at the rail",
                     "the mastering or recording level"),
         "silent": ("dBFS", "median level {:.1f} dBFS", "the recording level"),
         "dc_offset": ("full scale", "median offset {:.3g} of full scale", "the recording chain"),
         "narrowband": ("of Nyquist", "median band edge {:.2f} of Nyquist",
                        "the encoding, the recording rate or the sounds"),
         "identical_channels": ("full scale", "channels within {:.2g} of full scale", "mono written as stereo")}

Issue = tuple[str, float, float]  # (type, value, threshold)


@dataclass(frozen=True)
class ClipHealth:
    rate: int  # native sample rate, Hz
    channels: int  # C
    frames: int  # T, samples per channel that were analysed
    peak: float  # max |sample|, full scale = 1
    clipped_share: float  # share of the T * C samples with |x| >= CLIP_LEVEL
    level_dbfs: float  # RMS over all samples, dBFS (LEVEL_FLOOR_DBFS for digital silence)
    dc_offset: float  # |mean| of the quietest frames, full scale (the channel where it is largest)
    dc_spread: float  # standard deviation of those frames' means (same channel); NaN: one frame only
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
    dc, spread = _quiet_offset(data, rate)
    diff = float("nan")
    if c > 1:
        diff = max(float(np.abs(data[:, i] - data[:, 0]).max()) for i in range(1, c))
    return ClipHealth(rate=int(rate), channels=int(c), frames=int(t), peak=peak,
                      clipped_share=float(clipped / flat.size), level_dbfs=max(float(level), LEVEL_FLOOR_DBFS),
                      dc_offset=dc, dc_spread=spread, bandwidth_hz=_band_edge(data, rate), channel_difference=diff)


def clip_issues(h: ClipHealth, *, band_reference: float = 1.0) -> list[Issue]:
    """The per-clip problems of `h`, in CLIP_ISSUE_TYPES order: [(type, value, threshold)].

    `band_reference`: the band edge, as a fraction of Nyquist, that clips like this one reach
    (`band_references`); 1.0, full band, judges a clip alone by NARROWBAND_FRACTION.
    """
    nyquist_edge = min(NARROWBAND_FRACTION, NARROWBAND_RELATIVE * band_reference) * h.rate / 2
    checks = [
        ("clipped", h.clipped_share, CLIPPED_SHARE, h.clipped_share >= CLIPPED_SHARE),
        ("silent", h.level_dbfs, SILENT_DBFS, h.level_dbfs < SILENT_DBFS),
        # NaN spread (one frame) compares False: too short to tell an offset from a sound
        ("dc_offset", h.dc_offset, DC_OFFSET, h.dc_offset > DC_OFFSET and h.dc_offset > DC_CONSISTENCY * h.dc_spread),
        # NaN (no signal to measure) compares False: a silent clip is reported as silent only
        ("narrowband", h.bandwidth_hz, nyquist_edge, h.bandwidth_hz < nyquist_edge),
        # NaN for mono compares False
        ("identical_channels", h.channel_difference, IDENTICAL_TOLERANCE,
         h.channel_difference <= IDENTICAL_TOLERANCE),
    ]
    return [(name, float(value), float(threshold)) for name, value, threshold, hit in checks if hit]


def band_references(healths: list[ClipHealth]) -> np.ndarray:
    """(N,) each clip's band reference: the edge (fraction of Nyquist) that all but UNUSUAL_SHARE of
    the clips of its sample rate reach. Where fewer than MIN_CLIPS share its rate, the clips of the
    rates that MIN_CLIPS do share stand in (all clips if none does). Clips without an edge (silent)
    take no part; 1.0 (full band) where no clip has one."""
    edges = np.array([h.bandwidth_hz / (h.rate / 2) for h in healths], dtype=np.float64)  # (N,) NaN: none
    rates = np.array([h.rate for h in healths])  # (N,)
    values, counts = np.unique(rates, return_counts=True)
    common = np.isin(rates, values[counts >= MIN_CLIPS])  # (N,)

    def reference(mask):
        known = edges[mask & ~np.isnan(edges)]
        return float(np.quantile(known, UNUSUAL_SHARE)) if len(known) else 1.0

    out = np.full(len(healths), reference(common if common.any() else np.ones(len(healths), dtype=bool)))  # (N,)
    for rate in values[counts >= MIN_CLIPS]:
        out[rates == rate] = reference(rates == rate)
    return out


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


def dataset_notes(healths: list[ClipHealth]) -> list[dict]:
    """The per-clip problems that more than MAJORITY_SHARE of the clips have, each once, in CLIP_ISSUE_TYPES
    order: [{type, n_clips, n_total, median_value, unit, text}]. Each clip is judged alone here
    (narrowband: below NARROWBAND_FRACTION of its Nyquist); median_value is the median over the clips
    that have it, in `unit` (narrowband: the band edge as a fraction of Nyquist). None under MIN_CLIPS clips.
    """
    if len(healths) < MIN_CLIPS:
        return []
    values: dict[str, list[float]] = {t: [] for t in CLIP_ISSUE_TYPES}
    for h in healths:
        for name, value, _ in clip_issues(h):
            values[name].append(value / (h.rate / 2) if name == "narrowband" else value)
    notes = []
    for name, found in values.items():
        if len(found) > MAJORITY_SHARE * len(healths):
            unit, shown, source = NOTES[name]
            median = float(np.median(found))
            notes.append({"type": name, "n_clips": len(found), "n_total": len(healths), "median_value": median,
                          "unit": unit, "text": f"{name} in {len(found):,} of {len(healths):,} clips "
                          f"({shown.format(median)}): from {source}, not from single clips"})
    return notes


def issue_table(healths: Mapping[int, ClipHealth], notes: list[dict] | None = None):
    """The rows of audio_issues.csv: a DataFrame `row, type, value, threshold`, by row then type.

    `healths` maps manifest row -> ClipHealth for every clip that was decoded (skipped clips have
    none, and take no part in the dataset rules). A problem that `dataset_notes` reports is left out,
    except narrowband: its rows are the clips far below the rest's band (band_references), which the
    note does not name. `notes`: dataset_notes of the same clips, when the caller already has them.
    """
    import pandas as pd  # here, not at the top: the decoding workers import this module

    rows = sorted(healths)
    clips = [healths[r] for r in rows]
    shared = {note["type"] for note in (dataset_notes(clips) if notes is None else notes)} - {"narrowband"}
    found = dataset_issues(clips)  # (N,) lists
    records = [(r, *issue) for r, h, ref, extra in zip(rows, clips, band_references(clips), found)
               for issue in clip_issues(h, band_reference=ref) + extra if issue[0] not in shared]
    table = pd.DataFrame(records, columns=list(ISSUE_COLUMNS))
    return table.astype({"row": "int64", "type": "object", "value": "float64", "threshold": "float64"})


def _quiet_offset(data: np.ndarray, rate: int) -> tuple[float, float]:
    """(|mean| of the quietest frames' samples, standard deviation of their means), in the channel
    where the offset is largest; the spread is NaN when the clip holds one frame only."""
    t, c = data.shape
    length = max(1, min(t, round(DC_FRAME_SECONDS * rate)))  # a clip shorter than a frame is one frame
    q = t // length
    means, squares = np.empty((q, c)), np.empty((q, c))  # (Q, C)
    for i in range(c):  # one contiguous channel at a time: einsum on the strided (Q, L, C) view is 8x slower
        x = np.ascontiguousarray(data[:q * length, i]).reshape(q, length)  # (Q, L)
        means[:, i] = np.einsum("ql->q", x, dtype=np.float64) / length
        squares[:, i] = np.einsum("ql,ql->q", x, x, dtype=np.float64) / length
    ac = np.sqrt(np.maximum(squares - means ** 2, 0.0)).mean(axis=1)  # (Q,) AC RMS, channels averaged
    k = min(q, max(QUIET_MIN_FRAMES, round(QUIET_SHARE * q)))
    quiet = means[np.argsort(ac, kind="stable")[:k]]  # (k, C)
    offsets = quiet.mean(axis=0)  # (C,)
    i = int(np.argmax(np.abs(offsets)))
    spread = float(quiet[:, i].std(ddof=1)) if k > 1 else float("nan")
    return float(abs(offsets[i])), spread


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
