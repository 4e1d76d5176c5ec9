"""Audio-health issues planted among real FSDD clips (8 kHz, 16-bit mono) are found, clean ones are not."""

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from audit import health

CLEAN_SPEAKERS = ("george", "jackson", "lucas", "theo", "yweweler")
# Real FSDD clips that do have a DC offset above health.DC_OFFSET (measured over all 3,000 clips):
# all of nicolas's (0.0068-0.0080 full scale, present in his pauses too) and these five of lucas's.
# They are left out of the clean check and are the subject of test_real_dc_offsets_in_fsdd_are_found.
DC_OFFSET_CLIPS = ("1_lucas_36", "4_lucas_47", "5_lucas_45", "8_lucas_28", "9_lucas_41")
# The real clips nearest each threshold, kept in the clean check: the five with 1-3 samples at full
# scale, the quietest (-53.4 dBFS), the lowest band edge (0.92 of Nyquist), the largest DC below 0.001.
HARD_CLEAN_CLIPS = ("6_jackson_23", "6_jackson_38", "6_jackson_41", "6_jackson_47", "6_jackson_49",
                    "6_theo_33", "4_lucas_20", "1_lucas_37")


def read(fsdd_dir, name):
    data, rate = sf.read(fsdd_dir / f"{name}.wav", dtype="float32", always_2d=True)  # (T, 1)
    assert rate == 8000
    return data, rate


def types(issues):
    return {t for t, _, _ in issues}


def clean_names():
    names = [f"{d}_{s}_{n}" for s in CLEAN_SPEAKERS for d in range(10) for n in range(4)]  # 200 clips
    return [n for n in names if n not in DC_OFFSET_CLIPS] + list(HARD_CLEAN_CLIPS)


def test_clean_fsdd_clips_raise_nothing(fsdd_dir):
    healths = {row: health.clip_health(*read(fsdd_dir, name)) for row, name in enumerate(clean_names())}
    table = health.issue_table(healths)
    names = clean_names()
    assert table.empty, [(names[r], t, v) for r, t, v in zip(table.row, table.type, table.value)]


def test_real_dc_offsets_in_fsdd_are_found(fsdd_dir):
    for name in [f"{d}_nicolas_0" for d in range(10)] + list(DC_OFFSET_CLIPS):
        issues = health.clip_issues(health.clip_health(*read(fsdd_dir, name)))
        assert types(issues) == {"dc_offset"}, (name, issues)
        assert issues[0][1] > health.DC_OFFSET and issues[0][2] == health.DC_OFFSET


def clipped(x):
    return np.clip(x * (20 / np.abs(x).max()), -1, 1)  # peak at 20x full scale, whatever the level


def mildly_clipped(x):
    return np.clip(x / np.quantile(np.abs(x), 0.99), -1, 1)  # 1% of the samples at the rail


def near_silent(x):
    return x * (10 ** (-70 / 20) / np.sqrt(np.mean(x.astype(np.float64) ** 2)))  # RMS -70 dBFS


def with_dc(x):
    return x + 0.05  # -26 dBFS of DC; the clips it is added to here peak below 0.9, so nothing clips


def identical_stereo(x):
    return np.repeat(x, 2, axis=1)  # (T, 2)


# Clamping an asymmetric waveform shifts its mean: a clipped speech clip may have a real DC offset too
# (FSDD x20: median |mean| 0.005, above DC_OFFSET for 65% of clips), and both are reported.
CLIPPED = ({"clipped"}, {"clipped", "dc_offset"})
# (name, transform of (T, 1) samples, allowed sets of clip_issues types)
PLANTS = [("clipped", clipped, CLIPPED),
          ("mildly_clipped", mildly_clipped, CLIPPED),
          ("silent", near_silent, ({"silent"},)),
          ("dc", with_dc, ({"dc_offset"},)),
          ("stereo", identical_stereo, ({"identical_channels"},))]


@pytest.mark.parametrize("clip", ["0_george_0", "3_jackson_1", "7_theo_2"])
@pytest.mark.parametrize("name, plant, expected", PLANTS, ids=[p[0] for p in PLANTS])
def test_planted_clip_issue_is_found(fsdd_dir, clip, name, plant, expected):
    data, rate = read(fsdd_dir, clip)
    assert health.clip_issues(health.clip_health(data, rate)) == []
    issues = health.clip_issues(health.clip_health(plant(data).astype(np.float32), rate))
    assert types(issues) in expected, issues


@pytest.mark.parametrize("new_rate", [16_000, 44_100])
def test_upsampled_fsdd_is_narrowband_and_native_is_not(fsdd_dir, new_rate):
    # the lowest-edge real clip, and clips of every clean speaker
    for name in ["4_lucas_20"] + [f"{d}_{s}_5" for d, s in enumerate(CLEAN_SPEAKERS)]:
        data, rate = read(fsdd_dir, name)
        native = health.clip_health(data, rate)
        assert native.bandwidth_hz >= health.NARROWBAND_FRACTION * rate / 2, name
        up = AF.resample(torch.from_numpy(data[:, 0]), rate, new_rate).numpy()[:, None]  # (T', 1)
        issues = health.clip_issues(health.clip_health(up, new_rate))
        assert types(issues) == {"narrowband"}, (name, issues)
        _, value, threshold = issues[0]
        assert value < threshold == health.NARROWBAND_FRACTION * new_rate / 2


def test_clipping_is_found_in_an_8_bit_file(fsdd_dir, tmp_path):
    data, rate = read(fsdd_dir, "0_george_0")
    sf.write(tmp_path / "clipped.wav", clipped(data), rate, subtype="PCM_U8")
    u8, _ = sf.read(tmp_path / "clipped.wav", dtype="float32", always_2d=True)
    assert u8.max() < 0.993  # 8-bit's top code is 127/128: the rail is below 1
    h = health.clip_health(u8, rate)
    assert h.clipped_share == pytest.approx(health.clip_health(clipped(data), rate).clipped_share, rel=0.02)
    assert "clipped" in types(health.clip_issues(h))


def test_identical_means_within_one_16_bit_step(fsdd_dir, tmp_path):
    data, rate = read(fsdd_dir, "0_george_0")
    sf.write(tmp_path / "dual.wav", identical_stereo(data), rate, subtype="PCM_16")
    dual, _ = sf.read(tmp_path / "dual.wav", dtype="float32", always_2d=True)  # (T, 2)
    assert types(health.clip_issues(health.clip_health(dual, rate))) == {"identical_channels"}
    nudged = dual.copy()
    nudged[::100, 1] += 2 * health.IDENTICAL_TOLERANCE  # two 16-bit steps on 1% of the samples
    assert health.clip_issues(health.clip_health(nudged, rate)) == []


def test_real_stereo_is_not_identical(fsdd_dir):
    left, rate = read(fsdd_dir, "0_george_0")
    right, _ = read(fsdd_dir, "0_george_1")
    t = min(len(left), len(right))
    h = health.clip_health(np.concatenate([left[:t], right[:t]], axis=1), rate)  # (T, 2)
    assert h.channels == 2 and h.channel_difference > 0.01
    assert health.clip_issues(h) == []


def test_issue_table_finds_each_planted_clip_among_real_ones(fsdd_dir):
    names = [f"{d}_{s}_{n}" for s in ("george", "theo") for d in range(10) for n in (6, 7)]  # 40 clean
    clips = [read(fsdd_dir, n) for n in names]
    base, rate = clips[0]
    up = AF.resample(torch.from_numpy(base[:, 0]), rate, 44_100).numpy()[:, None]  # (T', 1)
    other = clips[1][0]
    t = min(len(base), len(other))
    two = np.concatenate([base[:t], other[:t]], axis=1)  # (T, 2) a real stereo pair, not identical
    planted = {  # row -> (samples, rate, expected types)
        40: (clipped(base), rate, {"clipped", "dc_offset"}),  # see CLIPPED
        41: (near_silent(base), rate, {"silent"}),
        42: (with_dc(base), rate, {"dc_offset"}),
        43: (up, 44_100, {"narrowband", "unusual_sample_rate"}),
        44: (identical_stereo(base), rate, {"identical_channels", "unusual_channels"}),
        45: (two, rate, {"unusual_channels"}),
    }
    healths = {row: health.clip_health(x, r) for row, (x, r) in enumerate(clips)}
    healths |= {row: health.clip_health(x.astype(np.float32), r) for row, (x, r, _) in planted.items()}
    table = health.issue_table(healths)
    assert list(table.columns) == list(health.ISSUE_COLUMNS)
    assert table.dtypes.astype(str).tolist() == ["int64", "object", "float64", "float64"]
    assert table.row.is_monotonic_increasing
    found = {row: set(g.type) for row, g in table.groupby("row")}
    assert found == {row: expected for row, (_, _, expected) in planted.items()}
    rate_row = table[table.type == "unusual_sample_rate"].iloc[0]
    assert (rate_row.value, rate_row.threshold) == (44_100, 8_000)
    channel_rows = table[table.type == "unusual_channels"]
    assert channel_rows.value.tolist() == [2, 2] and channel_rows.threshold.tolist() == [1, 1]


def fake(rate=8_000, channels=1):
    return health.ClipHealth(rate=rate, channels=channels, frames=8_000, peak=0.5, clipped_share=0.0,
                             level_dbfs=-25.0, dc_offset=0.0, bandwidth_hz=rate / 2,
                             channel_difference=float("nan") if channels == 1 else 0.1)


def test_dataset_issues_need_a_majority_and_a_rare_value():
    odd_one = [fake()] * 29 + [fake(rate=16_000)]  # 1 of 30: 3%
    assert health.dataset_issues(odd_one) == [[]] * 29 + [[("unusual_sample_rate", 16_000.0, 8_000.0)]]
    even = [fake()] * 15 + [fake(rate=16_000)] * 15  # a mixed dataset: nobody is odd
    assert health.dataset_issues(even) == [[]] * 30
    common = [fake()] * 18 + [fake(channels=2)] * 2  # 10% of clips: a second format, not an odd clip
    assert health.dataset_issues(common) == [[]] * 20
    no_majority = [fake()] * 10 + [fake(rate=16_000)] * 10 + [fake(rate=22_050)] * 10 + [fake(rate=44_100)]
    assert health.dataset_issues(no_majority) == [[]] * 31  # 44.1 kHz is rare, but unlike what?
    assert health.dataset_issues([]) == []
    assert health.issue_table({}).columns.tolist() == list(health.ISSUE_COLUMNS)


def test_a_60s_44k1_stereo_clip_costs_bounded_work(monkeypatch):
    rng = np.random.default_rng(0)
    data = (0.1 * rng.standard_normal((60 * 44_100, 2))).astype(np.float32)  # (T, 2) -20 dBFS noise
    seen = []
    rfft = np.fft.rfft
    monkeypatch.setattr(np.fft, "rfft", lambda x, *a, **k: seen.append(x.shape) or rfft(x, *a, **k))
    h = health.clip_health(data, 44_100)
    assert seen == [(health.MAX_FRAMES, health.N_FFT)]  # one FFT of 64 x 1024 samples, not of 2.6M
    assert h.frames == 60 * 44_100 and h.channels == 2
    assert h.level_dbfs == pytest.approx(-20, abs=0.05) and h.dc_offset < 1e-3
    assert h.bandwidth_hz > 0.95 * 22_050  # white noise fills the band
    assert health.clip_issues(h) == []


@pytest.mark.parametrize("data, rate, match", [
    (np.zeros(800, np.float32), 8000, "shaped"),
    (np.zeros((800, 1), np.int16), 8000, "float"),
    (np.zeros((0, 1), np.float32), 8000, "at least one sample"),
    (np.zeros((800, 1), np.float32), 0, "positive"),
])
def test_bad_input_is_refused_in_plain_words(data, rate, match):
    with pytest.raises(ValueError, match=match):
        health.clip_health(data, rate)


def test_a_run_writes_each_planted_problem_to_audio_issues_and_nothing_for_clean_clips(tmp_path, fsdd_dir, ecapa,
                                                                                      cache_dir):
    """End to end: measured in the decoding workers, kept in the cache, written and counted by the run."""
    import pandas as pd

    import audit

    folder = tmp_path / "clips"
    folder.mkdir()
    for d in range(4):
        for n in range(6):
            name = f"{d}_theo_{n}"
            sf.write(folder / f"{name}.wav", read(fsdd_dir, name)[0], 8000, subtype="PCM_16")
    planted = {"0_clipped": ("0_george_0", clipped, 8000), "1_silent": ("1_george_0", near_silent, 8000),
               "2_dc": ("2_george_0", with_dc, 8000), "3_stereo": ("3_george_0", identical_stereo, 8000),
               "3_up": ("3_george_1", lambda x: AF.resample(torch.from_numpy(x.T), 8000, 44100).numpy().T, 44100)}
    for name, (source, plant, rate) in planted.items():
        sf.write(folder / f"{name}.wav", plant(read(fsdd_dir, source)[0]), rate, subtype="PCM_16")
    result = audit.run(str(folder), out=str(tmp_path / "out"), encoder=ecapa, cache_dir=str(cache_dir),
                       devices=1, progress=False)
    table = pd.read_csv(tmp_path / "out" / "audio_issues.csv")
    found = {(p.split("/")[-1][:-4], t) for p, t in zip(table["path"], table["type"])}
    assert {("0_clipped", "clipped"), ("1_silent", "silent"), ("2_dc", "dc_offset"),
            ("3_stereo", "identical_channels"), ("3_stereo", "unusual_channels"), ("3_up", "narrowband"),
            ("3_up", "unusual_sample_rate")} <= found
    assert {name for name, _ in found} <= set(planted), "a clean clip was flagged"
    assert result.summary["audio_issues"]["n_clips"] == len(planted)
    again = audit.run(str(folder), encoder=ecapa, cache_dir=str(cache_dir), devices=1, progress=False)
    assert again.summary["n_embedded_now"] == 0  # from the cache, with the health it measured
    assert again.files.audio_issues.equals(result.files.audio_issues)
