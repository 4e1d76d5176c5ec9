"""EfficientAT encoders: the real mn04 AudioSet weights load strictly, reproduce the upstream model's logits,
tag real and synthetic audio sensibly, embed a padded batch as each clip alone, and resolve/verify/download.

Notation: B clips, T samples (32 kHz), C channels of the last map (384 for mn04), S steps, K = 527 classes.
The weights come from $AUDIT_EFFICIENTAT_DIR or ../shared/models/efficientat-mn04 (read-only: copies are
made in tmp dirs); the test is skipped where neither is present.
"""

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from audit.encoders import efficientat as ea
from audit.errors import UserError

MODEL_DIR = Path(os.environ.get(ea.DIR_ENV) or Path(__file__).resolve().parents[2] / "shared/models/efficientat-mn04")
WEIGHTS = MODEL_DIR / "mn04_as_mAP_432.pt"
pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"no offline EfficientAT mn04 weights at {WEIGHTS}")

# The upstream model's 527 logits for this clip (8 kHz, resampled to 32 kHz by torchaudio's default resample),
# computed once by fschmid56/EfficientAT at a425fdc (models/mn/model.py get_model(width_mult=0.4) + its
# AugmentMelSTFT in eval mode, with torchvision 0.26.0): ours matched it to 0.0 (bit-exact) on CPU.
REFERENCE_CLIP = "0_george_0.wav"
REFERENCE_LOGITS = Path(__file__).parent / "data" / "efficientat_mn04_fsdd_logits.npy"
TOLERANCE = 1e-5  # batched vs alone, absolute; measured 0.0 (each equal-length group runs unpadded)
MN04_CHANNELS = 384  # 960 x 0.4
MN04_PARAMETERS = 983_599  # the README's "0.98 M parameters"


def _labels() -> list[str]:
    with open(MODEL_DIR / "class_labels_indices.csv", newline="") as f:
        return [row["display_name"] for row in csv.DictReader(f)]


def _clip(fsdd_dir: Path, name: str) -> torch.Tensor:
    """(T,) the FSDD recording at 32 kHz."""
    x, rate = sf.read(fsdd_dir / name, dtype="float32")
    return AF.resample(torch.from_numpy(x), rate, ea.SAMPLE_RATE)


def _batch(clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded wavs (B, T) and relative lengths (B,)."""
    n = max(len(c) for c in clips)
    wavs = torch.zeros(len(clips), n)
    for b, c in enumerate(clips):
        wavs[b, : len(c)] = c
    return wavs, torch.tensor([len(c) / n for c in clips])


@pytest.fixture(scope="module")
def encoder() -> ea.EfficientATEncoder:
    return ea.load_encoder(str(WEIGHTS))


def test_loads_strictly_and_reproduces_upstream_logits(encoder, fsdd_dir):
    assert sum(p.numel() for p in encoder.net.parameters()) == MN04_PARAMETERS
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    assert not encoder.train().training  # a frozen encoder stays in eval mode (BatchNorm on running stats)
    assert encoder.identity().endswith(f"mn04_as_mAP_432.pt:{WEIGHTS.stat().st_size}:{ea.RELEASES['mn04_as'][1]}")
    wav = _clip(fsdd_dir, REFERENCE_CLIP)[None]  # (1, T)
    reference = torch.from_numpy(np.load(REFERENCE_LOGITS))  # (K,)
    with torch.inference_mode():
        logits = encoder.net.classifier(encoder.net.features(encoder.frontend(wav)[:, None]))[0]  # (K,)
    assert (logits - reference).abs().max() < 1e-4
    probs = encoder.predict(wav, torch.ones(1))[0]  # (K,)
    assert (probs - torch.sigmoid(reference)).abs().max() < 1e-5


def test_top_classes_are_sensible(encoder, fsdd_dir):
    labels = _labels()
    g = torch.Generator().manual_seed(0)
    t = torch.arange(2 * ea.SAMPLE_RATE) / ea.SAMPLE_RATE  # 2 s
    wavs, lens = _batch([_clip(fsdd_dir, REFERENCE_CLIP),
                         0.1 * torch.randn(3 * ea.SAMPLE_RATE, generator=g),  # white noise, 3 s
                         0.3 * torch.sin(2 * torch.pi * 1000 * t)])  # a 1 kHz sine, 2 s
    top = [[labels[k] for k in row] for row in encoder.predict(wavs, lens).argsort(1, descending=True)[:, :3].tolist()]
    # measured: Speech 0.62; Static 0.36, White noise 0.21; Beep, bleep 0.50, Sine wave 0.22
    assert top[0][0] == "Speech", top[0]
    assert top[1][0] in {"Static", "White noise", "Pink noise", "Noise"} and "White noise" in top[1], top[1]
    assert top[2][0] in {"Beep, bleep", "Sine wave"} and "Sine wave" in top[2], top[2]


@pytest.mark.parametrize("features", ea.FEATURES)
def test_padded_batch_equals_each_clip_alone(encoder, fsdd_dir, features):
    long = _clip(fsdd_dir, "7_yweweler_3.wav")
    # two clips of one length (a group of 2), a shorter one, and one under MIN_SAMPLES (zero-padded alone too)
    clips = [_clip(fsdd_dir, "0_jackson_0.wav"), long, long.flip(0), _clip(fsdd_dir, "3_nicolas_2.wav"), long[:600]]
    wavs, lens = _batch(clips)  # (B, T), (B,)
    emb, steps, counts = encoder.encode(wavs, lens, features, steps=True)  # (B, D), (B, S, C), (B,)
    assert emb.shape == (len(clips), encoder.feature_dim(features)) and emb.dtype == torch.float32
    assert steps.shape == (len(clips), int(counts.max()), MN04_CHANNELS)
    for b, clip in enumerate(clips):
        alone, alone_steps, alone_count = encoder.encode(clip[None], torch.ones(1), features, steps=True)
        assert (emb[b] - alone[0]).abs().max() <= TOLERANCE, (features, b)
        assert counts[b] == alone_count[0] == alone_steps.shape[1], b
        assert (steps[b, : counts[b]] - alone_steps[0]).abs().max() <= TOLERANCE, b
        assert not steps[b, counts[b]:].any(), b  # the pad region is zero
    assert not torch.equal(emb[0], emb[1])


def test_features_are_the_pooled_map(encoder, fsdd_dir):
    wav = _clip(fsdd_dir, REFERENCE_CLIP)[None]  # (1, T)
    one = torch.ones(1)
    embedding, steps, _ = encoder.encode(wav, one, "embedding", steps=True)  # (1, C), (1, S, C)
    frames, _, _ = encoder.encode(wav, one, "frames")  # (1, 2C)
    both, _, _ = encoder.encode(wav, one, "frames+embedding")  # (1, 3C)
    assert torch.equal(both, torch.cat([frames, embedding], 1))
    assert torch.allclose(frames[0, :MN04_CHANNELS], steps[0].mean(0), atol=1e-6)  # mean over time
    assert torch.allclose(frames[0, MN04_CHANNELS:], steps[0].std(0, unbiased=False), atol=1e-5)
    assert torch.allclose(embedding[0], steps[0].mean(0), atol=1e-6)  # frequency then time = both at once
    frames_f = (wav.shape[1] - 1) // ea.HOP + 1  # F: the centred STFT of the T - 1 pre-emphasised samples
    assert steps.shape[1] == -(-frames_f // 32)  # L: five stride-2 convs, each ceil(x / 2)


def test_a_name_resolves_to_the_local_copy(monkeypatch, tmp_path):
    monkeypatch.setenv(ea.DIR_ENV, str(MODEL_DIR))
    monkeypatch.setenv("AUDIT_CACHE", str(tmp_path))
    monkeypatch.setattr(ea, "download", _no_network)
    assert ea.resolve("efficientat:mn04_as") == MODEL_DIR / "mn04_as_mAP_432.pt"
    assert ea.load_encoder("efficientat:mn04_as").channels == MN04_CHANNELS
    assert not (tmp_path / "efficientat").exists()


def test_a_changed_byte_is_refused(monkeypatch, tmp_path):
    copy = tmp_path / "mn04_as_mAP_432.pt"
    data = bytearray(WEIGHTS.read_bytes())
    data[len(data) // 2] ^= 1
    copy.write_bytes(bytes(data))
    monkeypatch.setenv(ea.DIR_ENV, str(tmp_path))
    monkeypatch.setattr(ea, "download", _no_network)
    with pytest.raises(UserError, match="not the release's 899a8c62") as e:
        ea.resolve("efficientat:mn04_as")
    assert "\n" not in str(e.value)


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(UserError, match="known: efficientat:mn01_as, .*efficientat:mn10_as") as e:
        ea.resolve("efficientat:mn99_as")
    assert "\n" not in str(e.value)


def test_a_download_lands_in_the_cache_once(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv(ea.DIR_ENV, raising=False)
    monkeypatch.setenv("AUDIT_CACHE", str(tmp_path))
    calls = []

    def fake_download(url, dest):
        calls.append(url)
        shutil.copyfile(WEIGHTS, dest)

    monkeypatch.setattr(ea, "download", fake_download)
    path = ea.resolve("efficientat:mn04_as")
    assert path == tmp_path / "efficientat" / "mn04_as_mAP_432.pt" and path.is_file()
    assert calls == [ea.RELEASE_URL + "mn04_as_mAP_432.pt"]
    assert ea.resolve("efficientat:mn04_as") == path and len(calls) == 1  # cached: no second download
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no partial file left behind
    with caplog.at_level("WARNING", logger=ea.__name__):  # mn10's hash is not pinned: accepted, logged
        assert ea.resolve("efficientat:mn10_as").name == "mn10_as_mAP_471.pt"
    assert "not pinned" in caplog.text


def test_a_corrupt_download_is_refused_and_not_kept(monkeypatch, tmp_path):
    monkeypatch.delenv(ea.DIR_ENV, raising=False)
    monkeypatch.setenv("AUDIT_CACHE", str(tmp_path))
    monkeypatch.setattr(ea, "download", lambda url, dest: Path(dest).write_bytes(b"<html>rate limited</html>"))
    with pytest.raises(UserError, match="the download of .* has SHA-256"):
        ea.resolve("efficientat:mn04_as")
    assert not any((tmp_path / "efficientat").iterdir())
    monkeypatch.setattr(ea, "download", _no_network)
    with pytest.raises(UserError, match="could not download .*AUDIT_EFFICIENTAT_DIR"):
        ea.resolve("efficientat:mn04_as")


def test_a_local_file_takes_its_width_from_its_name(tmp_path):
    assert ea.width_of("mn04_as_mAP_432.pt") == 0.4 and ea.width_of("my_mn10_as.pt") == 1.0
    for bad in ("weights.pt", "dymn04_as.pt", "mn10_as_hop_5_mAP_475.pt", "mn10_as_fc_mAP_465.pt"):
        with pytest.raises(UserError):
            ea.width_of(bad)
    wrong = tmp_path / "mn10_as.pt"
    shutil.copyfile(WEIGHTS, wrong)
    with pytest.raises(UserError, match="does not fit EfficientAT's MobileNet at width 1.0") as e:
        ea.load_encoder(str(wrong))
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="neither an EfficientAT name"):
        ea.resolve(str(tmp_path / "missing_mn04.pt"))


def _no_network(url, dest):
    raise OSError("no network in tests")
