"""Every way to bring data: JSON-lines/NeMo manifests with segments, DataFrames, Hugging Face datasets,
precomputed embeddings. Each must give what the CSV manifest of the same clips gives."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import audit
from audit import audio
from audit.cache import clip_keys
from audit.errors import UserError


@pytest.fixture(scope="module")
def csv_run(subset_dir, ecapa, cache_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("csv")
    files = sorted(subset_dir.glob("*.wav"))
    manifest = pd.DataFrame({"path": [str(f) for f in files], "label": [f.name.split("_")[0] for f in files],
                             "speaker": [f.name.split("_")[1] for f in files]})
    manifest.to_csv(folder / "m.csv", index=False)
    result = audit.run(str(folder / "m.csv"), out=str(folder / "out"), encoder=ecapa, cache_dir=str(cache_dir),
                       devices=1, progress=False)
    return manifest, result, folder


def same_issues(a, b):
    cols = ["path", "given_label", "suggested_label", "is_label_issue"]
    pd.testing.assert_frame_equal(a.scores[cols].reset_index(drop=True), b.scores[cols].reset_index(drop=True))
    np.testing.assert_allclose(a.scores["label_quality"], b.scores["label_quality"], atol=1e-6)


def test_a_dataframe_gives_what_its_csv_gives(csv_run, ecapa, cache_dir):
    manifest, result, _ = csv_run
    same_issues(audit.run(manifest, encoder=ecapa, cache_dir=str(cache_dir), devices=1, progress=False), result)


def test_nemo_jsonl_gives_what_its_csv_gives(csv_run, ecapa, cache_dir):
    manifest, result, folder = csv_run
    lines = [json.dumps({"audio_filepath": p, "label": lab, "speaker": s})
             for p, lab, s in manifest.itertuples(index=False)]
    (folder / "m.jsonl").write_text("\n".join(lines) + "\n")
    same_issues(audit.run(str(folder / "m.jsonl"), encoder=ecapa, cache_dir=str(cache_dir), devices=1,
                          progress=False), result)


def test_a_saved_hugging_face_dataset_gives_what_its_csv_gives(csv_run, ecapa, cache_dir, tmp_path):
    datasets = pytest.importorskip("datasets")
    manifest, result, _ = csv_run
    classes = sorted(set(manifest["label"]))
    # Built as a plain struct, then cast: encoding through Audio() would need torchcodec, which audit avoids.
    ds = datasets.Dataset.from_dict(
        {"audio": [{"bytes": open(p, "rb").read(), "path": p.split("/")[-1]} for p in manifest["path"]],  # bytes only
         "label": [classes.index(x) for x in manifest["label"]], "speaker": manifest["speaker"].tolist()},
        features=datasets.Features({"audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                                    "label": datasets.ClassLabel(names=classes), "speaker": datasets.Value("string")}))
    ds = ds.cast_column("audio", datasets.Audio(decode=False))
    ds.save_to_disk(str(tmp_path / "saved"))
    got = audit.run(str(tmp_path / "saved"), encoder=ecapa, cache_dir=str(cache_dir), devices=1, progress=False)
    # the audio was materialized from the arrow bytes: other files, same clips, same labels, same findings
    assert got.scores["given_label"].tolist() == result.scores["given_label"].tolist()
    assert got.scores["is_label_issue"].tolist() == result.scores["is_label_issue"].tolist()
    np.testing.assert_allclose(got.pred_probs, result.pred_probs, atol=1e-5)
    assert got.scores["speaker"].tolist() == result.scores["speaker"].tolist()


def test_precomputed_embeddings_reproduce_the_run_without_audio(csv_run, tmp_path):
    manifest, result, folder = csv_run
    reused = audit.run(str(folder / "m.csv"), embeddings=str(folder / "out" / "embeddings.parquet"), devices=1,
                       progress=False)
    same_issues(reused, result)
    np.save(tmp_path / "e.npy", result.embeddings)  # rows in manifest order (nothing was skipped)
    # the audio is gone: embeddings alone carry the run, what needs audio is left out
    gone = manifest.assign(path=[f"/nowhere/{i}.wav" for i in range(len(manifest))])
    gone.to_csv(tmp_path / "gone.csv", index=False)
    blind = audit.run(str(tmp_path / "gone.csv"), embeddings=str(tmp_path / "e.npy"), devices=1, progress=False,
                      out=str(tmp_path / "out"))
    assert blind.scores["is_label_issue"].tolist() == result.scores["is_label_issue"].tolist()
    assert blind.files.audio_issues.empty and "no encoder ran" in blind.summary["note"]
    assert (tmp_path / "out" / "report.html").is_file()


def test_embeddings_of_the_wrong_shape_are_one_line(csv_run, tmp_path):
    _, _, folder = csv_run
    np.save(tmp_path / "bad.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(UserError, match=r"shape \(3, 4\), expected \(200, D\)"):
        audit.run(str(folder / "m.csv"), embeddings=str(tmp_path / "bad.npy"), progress=False)


def test_a_segment_decodes_that_part_of_its_file_and_is_its_own_clip(fsdd_dir, tmp_path):
    a, rate = sf.read(fsdd_dir / "3_theo_0.wav", dtype="float32")
    b, _ = sf.read(fsdd_dir / "8_theo_0.wav", dtype="float32")
    path = str(tmp_path / "long.wav")
    sf.write(path, np.concatenate([a, b]), rate)
    first = audio.load(path, 0.0, len(a) / rate)
    second = audio.load(path, len(a) / rate)
    np.testing.assert_allclose(first.numpy(), audio.load(str(fsdd_dir / "3_theo_0.wav")).numpy(), atol=0.02)
    assert abs(len(second) - 2 * len(b)) <= 2
    assert audio.probe(path, len(a) / rate)[0] == pytest.approx(len(b) / rate)
    keys = clip_keys([path, path, path], np.array([0.0, 0.0, len(a) / rate]), np.array([len(a) / rate, np.nan, np.nan]))
    assert len(set(keys)) == 3 and keys[1] == clip_keys([path])[0]  # the whole file keeps its plain key
    with pytest.raises(audio.ClipError, match="past the end"):
        audio.probe(path, 100.0)


def test_two_encoders_concatenate_their_features_each_with_its_own_cache(csv_run, ecapa, xvector_dir, cache_dir,
                                                                         tmp_path):
    _, result, folder = csv_run
    both = audit.run(str(folder / "m.csv"), encoder=[ecapa, str(xvector_dir)], features="embedding",
                     cache_dir=str(cache_dir), devices=1, progress=False, out=str(tmp_path / "o"))
    assert both.embeddings.shape == (200, 192 + 512)
    alone = audit.run(str(folder / "m.csv"), encoder=ecapa, features="embedding", cache_dir=str(cache_dir),
                      devices=1, progress=False)
    np.testing.assert_array_equal(both.embeddings[:, :192], alone.embeddings)  # ECAPA's part, from its cache
    assert both.summary["encoder"] == [ecapa, str(xvector_dir)]
