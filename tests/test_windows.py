"""Recordings of any length: windows, their batches, and the pooled embedding of a long clip."""

import numpy as np
import pytest
import soundfile as sf

from audit.windows import MIN_LAST_SECONDS, cut, units


def test_short_clips_are_one_window_and_long_ones_are_cut():
    w = cut(np.array([3.0, np.nan, 25.5, 10.0, 20.4]), window=10.0, hop=10.0)
    assert w.row.tolist() == [0, 2, 2, 2, 3, 4, 4]  # 25.5 s: 10 + 10 + 5.5; 20.4 s: its 0.4 s tail is dropped
    assert np.isnan(w.seconds[0]) and np.isnan(w.seconds[4])  # one-window clips read to their end, as before
    assert w.start[1:4].tolist() == [0.0, 10.0, 20.0] and w.seconds[3] == pytest.approx(5.5)
    # the rule, either side of its threshold: a tail just over MIN_LAST_SECONDS is a window, just under is not
    over, under = (cut(np.array([20.0 + MIN_LAST_SECONDS + d]), window=10.0, hop=10.0) for d in (0.01, -0.01))
    assert over.row.tolist() == [0, 0, 0] and over.seconds[2] == pytest.approx(MIN_LAST_SECONDS + 0.01)
    assert under.row.tolist() == [0, 0] and under.length.sum() == pytest.approx(20.0)
    overlap = cut(np.array([20.0]), window=10.0, hop=5.0)
    assert overlap.start.tolist() == [0.0, 5.0, 10.0]  # the window at 10 s reaches the end: no re-read tail


def test_all_windows_of_a_long_clip_form_one_unit():
    w = cut(np.array([3.0, 95.0, 2.0, 41.0]), window=10.0, hop=10.0)
    got = units(w, batch_seconds=32.0)
    ids = sorted(i for unit in got for batch in unit for i in batch)
    assert ids == list(range(len(w.row)))  # every window once
    for unit in got:
        rows = {int(w.row[i]) for batch in unit for i in batch}
        assert len(rows) == 1 or all(w.count(4)[r] == 1 for r in rows)  # a long clip never shares a unit
    for unit in got:
        for batch in unit:
            assert len(batch) == 1 or len(batch) * max(w.length[batch]) <= 32.0


def test_a_long_recording_labelled_by_its_last_four_minutes_is_not_flagged(tmp_path, fsdd_dir, ecapa, cache_dir):
    """5 minutes: "3" repeated for the first minute, "8" for four, labelled 8. Its first minute alone says 3."""
    import pandas as pd

    import audit

    first, rate = sf.read(fsdd_dir / "3_theo_0.wav", dtype="float32")
    second, _ = sf.read(fsdd_dir / "8_theo_0.wav", dtype="float32")

    def fill(clip, seconds):
        gap = np.zeros(rate // 4, np.float32)
        return np.tile(np.concatenate([clip, gap]), int(seconds * rate / len(clip)) + 1)[: int(seconds * rate)]

    sf.write(tmp_path / "long.wav", np.concatenate([fill(first, 60), fill(second, 240)]), rate)
    rows = [(str(tmp_path / "long.wav"), "8")]
    rows += [(str(fsdd_dir / f"{d}_{s}_{n}.wav"), str(d)) for d in (3, 8, 5) for s in ("theo", "george")
             for n in range(1, 5)]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(tmp_path / "m.csv", index=False)
    common = dict(encoder=ecapa, cache_dir=str(cache_dir), devices=1, progress=False, num_workers=0, folds=4)
    windowed = audit.run(str(tmp_path / "m.csv"), **common)
    row = windowed.scores.set_index("row").loc[0]
    assert not row["is_label_issue"] and row["suggested_label"] == "8", row
    # the old rule, its first 60 s only (one 60 s window, the next would start past the end), gets it wrong
    cut_60 = audit.run(str(tmp_path / "m.csv"), window_seconds=60.0, hop_seconds=400.0, **common)
    assert cut_60.scores.set_index("row").loc[0, "suggested_label"] == "3"
