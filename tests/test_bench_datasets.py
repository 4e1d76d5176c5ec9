"""bench/make_sets.py: tiny versions of every set, read back with audit's own manifest reader."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import soundfile as sf

from audit.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]


def _load_bench_datasets():
    # Loaded by path under its own name: bench/ is no package, and `datasets` is also Hugging Face's.
    spec = importlib.util.spec_from_file_location("bench_datasets", ROOT / "bench" / "make_sets.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and the worker pool look the module up by name
    spec.loader.exec_module(module)
    return module


bd = _load_bench_datasets()
needs_tts = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")),
                               reason="apt-get install espeak-ng sox")


def read_back(built):
    manifest = load_manifest(str(built.manifest))
    assert manifest.skipped.empty, manifest.skipped
    assert len(manifest.clips) == built.clips
    return manifest


def assert_16k_pcm16(files):
    for f in files:
        info = sf.info(f)
        assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16"), f


def digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*.wav")))
                          + (folder / "manifest.csv").read_bytes()).hexdigest()


@pytest.mark.parametrize("label", ["digit", "speaker"])
def test_fsdd_sets_label_each_file_by_its_name(tmp_path, fsdd_dir, label):
    built = bd.build_fsdd(tmp_path / label, label, n=12, seed=1, folder=fsdd_dir)
    clips = read_back(built).clips
    assert len(clips) == 12
    for _, row in clips.iterrows():
        digit, speaker, _ = Path(row["path"]).stem.split("_")
        assert (str(row["label"]), str(row["speaker" if label == "digit" else "digit"])) == \
            ((digit, speaker) if label == "digit" else (speaker, digit))
        assert Path(row["path"]).is_absolute() and Path(row["path"]).parent == fsdd_dir.resolve()


def test_multilabel_labels_are_the_sorted_distinct_digits_of_one_speaker(tmp_path, fsdd_dir):
    built = bd.build_multilabel(tmp_path / "ml", n=6, seed=0, folder=fsdd_dir)
    manifest = read_back(built)
    assert_16k_pcm16(manifest.files)
    for (_, row), file in zip(manifest.clips.iterrows(), manifest.files):
        sources = row["sources"].split(";")
        digits = [s.split("_")[0] for s in sources]
        assert {s.split("_")[1] for s in sources} == {row["speaker"]}
        assert row["sequence"].split() == digits and len(set(digits)) == len(digits) in (2, 3)
        assert row["label"] == ";".join(sorted(digits))
        speech = sum(sf.info(fsdd_dir / s).duration for s in sources)
        pauses = sf.info(file).duration - speech
        lo, hi = bd.GAP_SECONDS
        assert (len(sources) - 1) * lo - 0.01 <= pauses <= (len(sources) - 1) * hi + 0.01, file


def test_long_files_last_as_asked_and_name_their_dominant_digit(tmp_path, fsdd_dir):
    built = bd.build_long(tmp_path / "long", n=3, seed=0, minutes=(0.2, 0.3), folder=fsdd_dir)
    manifest = read_back(built)
    assert_16k_pcm16(manifest.files)
    for (_, row), file in zip(manifest.clips.iterrows(), manifest.files):
        assert 12 <= sf.info(file).duration <= 18
        assert float(row["dominant_share"]) > 0.3 and str(row["label"]) in bd.DIGITS


def test_long_switch_changes_digit_after_the_first_part(tmp_path, fsdd_dir):
    built = bd.build_long_switch(tmp_path / "switch", seed=0, speaker="theo", first_digit="3", second_digit="8",
                                 total_seconds=10, first_seconds=2, folder=fsdd_dir)
    manifest = read_back(built)
    row = manifest.clips.iloc[0]
    assert (str(row["label"]), str(row["first_digit"]), row["speaker"]) == ("8", "3", "theo")
    assert sf.info(manifest.files[0]).duration == pytest.approx(10, abs=1e-3)
    assert_16k_pcm16(manifest.files)


@needs_tts
def test_words_are_deterministic_across_worker_counts(tmp_path):
    one = bd.build_words(tmp_path / "one", n=6, seed=3, voices=3, jobs=1)
    two = bd.build_words(tmp_path / "two", n=6, seed=3, voices=3, jobs=2)
    manifest, again = read_back(one), read_back(two)
    assert set(manifest.clips["label"]) <= set(bd.WORDS)
    assert manifest.clips["voice"].nunique() <= 3
    assert_16k_pcm16(manifest.files)
    assert manifest.clips["path"].tolist() == again.clips["path"].tolist()
    assert manifest.clips["label"].tolist() == again.clips["label"].tolist()
    assert all(Path(a).read_bytes() == Path(b).read_bytes() for a, b in zip(manifest.files, again.files))
    assert all(0.2 < sf.info(f).duration < 3 for f in manifest.files)
    assert digest(tmp_path / "one") == digest(tmp_path / "two")


@needs_tts
def test_word_mixtures_are_distinct_words_of_one_voice(tmp_path):
    words = bd.build_words(tmp_path / "words", n=None, seed=1, voices=2, jobs=1)  # every word of 2 voices
    said = read_back(words).clips
    built = bd.build_multilabel_words(tmp_path / "mlw", words.manifest.parent, n=5, seed=0)
    manifest = read_back(built)
    assert_16k_pcm16(manifest.files)
    for (_, row), file in zip(manifest.clips.iterrows(), manifest.files):
        sequence = row["sequence"].split()
        sources = said.set_index(said["path"].str.split("/").str[-1]).loc[row["sources"].split(";")]
        assert list(sources["label"]) == sequence and set(sources["voice"]) == {row["voice"]}
        assert len(set(sequence)) == len(sequence) in (2, 3) and row["label"] == ";".join(sorted(sequence))
        speech = sum(sf.info(words.manifest.parent / p).duration for p in sources["path"])
        lo, hi = bd.GAP_SECONDS
        assert (len(sequence) - 1) * lo - 0.01 <= sf.info(file).duration - speech <= (len(sequence) - 1) * hi + 0.01


def test_refuses_a_folder_that_is_not_empty(tmp_path, fsdd_dir):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        bd.build_multilabel(tmp_path, n=1, folder=fsdd_dir)
