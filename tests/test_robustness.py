"""What real datasets and clusters throw at a batch job: bad files, a SIGKILL, reruns."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import soundfile as sf

from audit.cache import clip_keys
from audit.embed import embed, store_for
from audit.options import RunOptions

DIGITS = range(4)
GOOD_PER_DIGIT = 6  # >= 5 folds per class after the odd files are set aside


def build_corpus(root, fsdd_dir):
    """A manifest of real FSDD clips mixed with every kind of odd or broken file. Returns expectations."""
    audio = root / "audio"
    audio.mkdir()
    rows, scored, skipped = [], set(), set()

    def add(name, label, expect):
        rows.append((f"audio/{name}", label))
        if expect != "either":  # a truncated wav: libsndfile may read what is there, or refuse it
            (scored if expect == "scored" else skipped).add(f"audio/{name}")

    for d in DIGITS:
        for n in range(GOOD_PER_DIGIT):
            name = f"{d}_theo_{n}.wav"
            shutil.copy(fsdd_dir / name, audio / name)
            add(name, str(d), "scored")
    source, rate = sf.read(fsdd_dir / "1_george_0.wav", dtype="float32")

    (audio / "empty.wav").write_bytes(b"")
    add("empty.wav", "1", "skipped")
    sf.write(audio / "zero_length.wav", np.zeros(0, np.float32), 8000)
    add("zero_length.wav", "1", "skipped")
    raw = (fsdd_dir / "1_george_1.wav").read_bytes()
    (audio / "corrupt_header.wav").write_bytes(b"\x00JUNK" * 9 + raw[45:])
    add("corrupt_header.wav", "1", "skipped")
    (audio / "text.wav").write_text("not audio at all\n" * 100)
    add("text.wav", "1", "skipped")
    (audio / "truncated.wav").write_bytes(raw[: len(raw) // 2])  # header promises more than is there
    add("truncated.wav", "1", "either")
    sf.write(audio / "ten_ms.wav", source[:80], rate)
    add("ten_ms.wav", "1", "skipped")
    bad = source.copy()
    bad[100], bad[200] = np.nan, np.inf
    sf.write(audio / "nan_inf.wav", bad, rate, subtype="FLOAT")
    add("nan_inf.wav", "1", "skipped")

    for subtype in ("PCM_24", "FLOAT", "PCM_U8"):
        sf.write(audio / f"bits_{subtype}.wav", source, rate, subtype=subtype)
        add(f"bits_{subtype}.wav", "1", "scored")
    import torch
    import torchaudio

    up = torchaudio.functional.resample(torch.from_numpy(source), rate, 44100).numpy()
    sf.write(audio / "stereo_44k1.wav", np.stack([up, 0.5 * up], 1), 44100)
    add("stereo_44k1.wav", "1", "scored")
    sf.write(audio / "ten_minutes.wav", np.tile(source, int(600 * rate / len(source)) + 1)[: 600 * rate], rate)
    add("ten_minutes.wav", "2", "scored")
    sf.write(audio / "silence.wav", np.zeros(rate, np.float32), rate)
    add("silence.wav", "3", "scored")
    odd_name = "it's a \"quoted\" <b>&amp; 名前 ñ.wav"  # no "/": not allowed in a file name
    shutil.copy(fsdd_dir / "2_george_0.wav", audio / odd_name)
    add(odd_name, "2", "scored")
    os.symlink(fsdd_dir / "3_george_0.wav", audio / "link.wav")
    add("link.wav", "3", "scored")
    os.symlink(audio / "nowhere.wav", audio / "dangling.wav")
    add("dangling.wav", "3", "skipped")
    shutil.copy(fsdd_dir / "0_george_0.wav", audio / "locked.wav")
    os.chmod(audio / "locked.wav", 0)
    add("locked.wav", "0", "scored" if os.geteuid() == 0 else "skipped")  # root reads it anyway
    add("missing.wav", "0", "skipped")
    shutil.copy(fsdd_dir / "0_george_1.wav", audio / "no_label.wav")
    add("no_label.wav", "", "skipped")
    pd.DataFrame(rows, columns=["path", "label"]).assign(note="x").to_csv(root / "manifest.csv", index=False)
    return scored, skipped


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "audit", *args], capture_output=True, text=True, **kw)


def test_bad_input_corpus_is_scored_or_skipped_never_lost(tmp_path, fsdd_dir, ecapa):
    scored, skipped = build_corpus(tmp_path, fsdd_dir)
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = run_cli("--data", str(tmp_path / "manifest.csv"), "--encoder", ecapa, "--out", str(out),
                     "--cache-dir", str(cache), "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    got_scored = set(pd.read_csv(out / "scores.csv")["path"])
    got_skipped = pd.read_csv(out / "skipped.csv", keep_default_na=False)
    assert not got_scored & set(got_skipped["path"])
    assert scored <= got_scored, scored - got_scored
    assert skipped <= set(got_skipped["path"]), skipped - set(got_skipped["path"])
    assert (got_skipped["reason"].str.len() > 0).all()
    assert "audio/truncated.wav" in got_scored | set(got_skipped["path"])
    summary = json.loads((out / "summary.json").read_text())
    n_rows = len(pd.read_csv(tmp_path / "manifest.csv"))
    assert summary["n_clips"] + summary["n_skipped"] == n_rows
    assert summary["n_clips"] == len(got_scored) and summary["n_skipped"] == len(got_skipped)
    # the lossless variants are the same speech: their embeddings match the 16-bit original's (8-bit
    # adds audible quantization noise, so it is checked at the sample level in test_audio instead)
    audio = tmp_path / "audio"
    original = fsdd_dir / "1_george_0.wav"
    files = [str(original)] + [str(audio / f"bits_{s}.wav") for s in ("PCM_24", "FLOAT")] + \
        [str(audio / "stereo_44k1.wav")]
    opts = RunOptions(encoder=ecapa, cache_dir=str(cache), accelerator="cpu", devices=1, num_workers=0,
                      batch_seconds=8.0, progress=False)
    embeddings = store_for(opts)[0].load().emb
    keys = clip_keys(files)
    if keys[0] not in embeddings:  # the original itself is not in the corpus: embed it the same way
        embeddings[keys[0]] = embed([str(original)], opts).emb[0]
    ref = embeddings[keys[0]]
    for f, k in zip(files[1:], keys[1:]):
        e = embeddings[k]
        cos = float(e @ ref / np.linalg.norm(e) / np.linalg.norm(ref))
        assert cos > 0.97, (f, cos)


def test_killed_run_resumes_from_complete_shards_and_gives_the_same_issues(tmp_path, subset_dir, ecapa):
    common = ["--data", str(subset_dir), "--encoder", ecapa, "--no-progress", "--seed", "1",
              "--shard-clips", "16", "--num-workers", "0"]
    cache = tmp_path / "cache"
    store = store_for(RunOptions(encoder=ecapa, cache_dir=str(cache)))[0]
    shards = store.folder
    proc = subprocess.Popen([sys.executable, "-m", "audit", *common, "--out", str(tmp_path / "killed"),
                             "--cache-dir", str(cache)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(shards.glob("shard-*.npz"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.name for p in shards.glob("shard-*.npz")}
    kept = store.load().emb
    assert 3 <= len(done_before) and 0 < len(kept) < 200, "the kill must land mid-way through the embedding"

    resumed = run_cli(*common, "--out", str(tmp_path / "killed"), "--cache-dir", str(cache), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert done_before <= {p.name for p in shards.glob("shard-*.npz")}  # complete shards were kept
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["n_from_cache"] >= len(kept) and summary["n_embedded_now"] <= 200 - len(kept)

    straight = run_cli(*common, "--out", str(tmp_path / "straight"), "--cache-dir", str(tmp_path / "c2"),
                       timeout=600)
    assert straight.returncode == 0, straight.stderr
    for name in ("issues.csv", "scores.csv"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()


def test_outputs_are_written_atomically_and_caches_hold_no_pickles(tmp_path, subset_dir, ecapa, cache_dir):
    out = tmp_path / "o"
    result = run_cli("--data", str(subset_dir), "--encoder", ecapa, "--out", str(out), "--cache-dir",
                     str(cache_dir), "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr
    assert not list(out.glob(".*.tmp"))
    np.load(out / "pred_probs.npy", allow_pickle=False)
    for shard in store_for(RunOptions(encoder=ecapa, cache_dir=str(cache_dir)))[0].folder.glob("shard-*.npz"):
        with np.load(shard, allow_pickle=False) as z:
            assert all(z[k].dtype != object for k in z.files)


def test_an_output_write_failing_midway_keeps_the_old_file_and_leaves_no_partial_one(tmp_path, monkeypatch):
    """A kill or a full disk in the middle of rewriting scores.csv or pred_probs.npy: the old file is whole."""
    import pytest

    from audit import outputs

    old = pd.DataFrame({"rank": [1, 2], "path": ["a.wav", "b.wav"], "label_quality": [0.25, 0.5]})
    outputs.write_csv(old, tmp_path / "scores.csv")
    outputs._atomic(tmp_path / "pred_probs.npy", lambda f: np.save(f, np.eye(2), allow_pickle=False))

    def half(self, f, *args, **kwargs):
        f.write("rank,path,label_quality\n1,c.w")  # part of the new table, then the failure
        raise OSError(28, "No space left on device")

    def half_npy(f, *args, **kwargs):
        f.write(b"\x93NUMPY")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half)
    monkeypatch.setattr(np, "save", half_npy)
    with pytest.raises(OSError):
        outputs.write_csv(old.assign(path=["c.wav", "d.wav"]), tmp_path / "scores.csv")
    with pytest.raises(OSError):
        outputs._atomic(tmp_path / "pred_probs.npy", lambda f: np.save(f, np.zeros((3, 3))))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred_probs.npy", "scores.csv"]  # no temp file left
    pd.testing.assert_frame_equal(outputs.read_csv(tmp_path / "scores.csv"), old)
    np.testing.assert_array_equal(np.load(tmp_path / "pred_probs.npy", allow_pickle=False), np.eye(2))
