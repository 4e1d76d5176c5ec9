import hashlib
import io
import shutil
import tarfile

import pandas as pd
import pytest

from audit import fsdd
from audit.errors import UserError
from audit.manifest import load_manifest


def copy_clips(fsdd_dir, folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(fsdd_dir / n, folder / n)


def test_folder_with_labels_in_names(tmp_path, fsdd_dir):
    copy_clips(fsdd_dir, tmp_path, ["0_george_0.wav", "7_jackson_3.wav"])
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "nolabel.wav").write_bytes((fsdd_dir / "1_theo_0.wav").read_bytes())
    m = load_manifest(str(tmp_path))
    assert m.source == "pattern"
    assert m.clips["label"].tolist() == ["0", "7"]
    assert m.skipped["path"].str.endswith("nolabel.wav").all() and len(m.skipped) == 1
    m = load_manifest(str(tmp_path), r"_(?P<label>[a-z]+)_")
    assert m.clips["label"].tolist() == ["george", "jackson"]


def test_bad_label_patterns_are_user_errors(tmp_path, fsdd_dir):
    copy_clips(fsdd_dir, tmp_path, ["0_george_0.wav"])
    with pytest.raises(UserError, match="named group"):
        load_manifest(str(tmp_path), r"^(\d)_")
    with pytest.raises(UserError, match="not a valid regex"):
        load_manifest(str(tmp_path), r"(?P<label>")


def test_class_folders(tmp_path, fsdd_dir):
    copy_clips(fsdd_dir, tmp_path / "yes", ["1_theo_0.wav"])
    copy_clips(fsdd_dir, tmp_path / "no" / "deeper", ["2_theo_0.wav", "2_theo_1.wav"])
    m = load_manifest(str(tmp_path))
    assert m.source == "class-folders"
    assert sorted(m.clips["label"]) == ["no", "no", "yes"]


def test_csv_manifest_keeps_extras_and_resolves_relative_paths(tmp_path, fsdd_dir):
    copy_clips(fsdd_dir, tmp_path / "audio", ["3_theo_0.wav", "4_theo_0.wav"])
    pd.DataFrame({"path": ["audio/3_theo_0.wav", "audio/4_theo_0.wav", "audio/gone.wav", "audio/3_theo_0.wav"],
                  "label": ["three", "four", "five", ""], "speaker": ["theo"] * 4}).to_csv(tmp_path / "m.csv", index=False)
    m = load_manifest(str(tmp_path / "m.csv"))
    assert m.clips.columns.tolist() == ["path", "label", "speaker"]
    assert m.clips["label"].tolist() == ["three", "four"]
    assert m.files[0] == str(tmp_path / "audio" / "3_theo_0.wav")
    assert sorted(m.skipped["reason"]) == ["empty label", "file not found"]
    m.clips.assign(path=m.files).to_parquet(tmp_path / "m.parquet")
    assert load_manifest(str(tmp_path / "m.parquet")).clips["speaker"].tolist() == ["theo", "theo"]


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "no audio files"),
    (lambda p: p.write_text("x"), "must be a .csv"),
])
def test_unusable_data_is_one_clear_error(tmp_path, setup, message):
    target = tmp_path / "data"
    setup(target)
    with pytest.raises(UserError, match=message):
        load_manifest(str(target))


def test_manifest_without_label_column(tmp_path):
    (tmp_path / "m.csv").write_text("path,class\na.wav,1\n")
    with pytest.raises(UserError, match="lacks column"):
        load_manifest(str(tmp_path / "m.csv"))


def test_fsdd_from_a_local_copy_is_verified(monkeypatch, fsdd_dir, tmp_path):
    monkeypatch.setenv("AUDIT_FSDD_DIR", str(fsdd_dir))
    m = load_manifest("fsdd")
    assert len(m.clips) == 2500 and m.clips["label"].nunique() == 10
    assert not m.clips["path"].str.contains("lucas").any()  # v1.0.9 predates that speaker
    bad = tmp_path / "bad"
    shutil.copytree(fsdd_dir, bad, ignore=shutil.ignore_patterns("*lucas*"))
    (bad / "0_george_0.wav").write_bytes(b"tampered")
    monkeypatch.setenv("AUDIT_FSDD_DIR", str(bad))
    with pytest.raises(UserError, match="fail their checksum"):
        load_manifest("fsdd")


def test_fsdd_download_path_extracts_and_verifies(monkeypatch, fsdd_dir, tmp_path):
    """The real download code, fed a tarball of the release's layout through a file:// URL."""
    archive = tmp_path / "v1.0.9.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in fsdd.expected_hashes():
            tar.add(fsdd_dir / name, arcname=f"free-spoken-digit-dataset-1.0.9/recordings/{name}")
        readme = b"not a recording"
        info = tarfile.TarInfo("free-spoken-digit-dataset-1.0.9/README.md")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
    monkeypatch.delenv("AUDIT_FSDD_DIR", raising=False)
    monkeypatch.setenv("AUDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AUDIT_FSDD_URL", archive.as_uri())
    files = fsdd.fsdd_files()
    assert len(files) == 2500
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == fsdd.expected_hashes()[files[0].name]
    monkeypatch.setenv("AUDIT_FSDD_URL", (tmp_path / "missing.tar.gz").as_uri())
    assert len(fsdd.fsdd_files()) == 2500  # cached: no second download
    monkeypatch.setenv("AUDIT_CACHE", str(tmp_path / "other"))
    with pytest.raises(UserError, match="could not download"):
        fsdd.fsdd_files()
