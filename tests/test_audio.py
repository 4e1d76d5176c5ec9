import numpy as np
import pytest
import soundfile as sf

from audit import audio


def write(path, data, rate, subtype=None):
    sf.write(path, data, rate, subtype=subtype)
    return str(path)


def test_fsdd_clip_is_resampled_to_16k(fsdd_dir):
    path = str(fsdd_dir / "6_yweweler_14.wav")
    native, rate = sf.read(path)
    assert rate == 8000
    wav = audio.load(path)
    assert wav.dtype.is_floating_point and wav.ndim == 1
    assert len(wav) == len(native) * 2  # 8 kHz -> 16 kHz
    assert audio.probe(path) == (pytest.approx(len(native) / 8000), 8000)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"])
def test_bit_depths_decode_to_the_same_signal(tmp_path, subtype):
    t = np.arange(16000) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    wav = audio.load(write(tmp_path / f"{subtype}.wav", tone, 16000, subtype))
    assert np.abs(wav.numpy() - tone).max() < 0.02  # 8-bit quantization is the coarsest


def test_stereo_44k1_is_mixed_down_and_resampled(tmp_path):
    left = np.full(44100, 0.2)
    right = np.full(44100, 0.6)
    wav = audio.load(write(tmp_path / "st.wav", np.stack([left, right], 1), 44100))
    assert len(wav) == 16000
    assert np.allclose(wav.numpy()[2000:-2000], 0.4, atol=1e-3)


def test_a_window_of_a_long_file_is_read_alone(tmp_path):
    rate = 8000
    ramp = (np.arange(70 * rate) / (70 * rate)).astype(np.float32)  # 70 s, every sample distinct
    path = write(tmp_path / "long.wav", ramp, rate, "FLOAT")
    assert audio.probe(path)[0] == pytest.approx(70.0)  # no cap: windows.py cuts long clips
    window = audio.load(path, 30.0, 10.0)
    assert len(window) == 10 * audio.SAMPLE_RATE
    assert window[len(window) // 2].item() == pytest.approx(35 / 70, abs=1e-3)


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b""), "unreadable"),
    (lambda p: p.write_text("this is not audio\n" * 50), "unreadable"),
    (lambda p: sf.write(p, np.zeros(0), 16000), "empty"),
    (lambda p: sf.write(p, np.zeros(160), 16000), "too short"),
    (lambda p: sf.write(p, np.array([0.1, np.nan] * 4000), 16000, subtype="FLOAT"), "non-finite"),
])
def test_bad_clips_raise_clip_error_with_a_reason(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(audio.ClipError, match=reason):
        audio.load(str(path))
    if reason != "non-finite":  # the header alone cannot show NaN samples: load() finds those
        with pytest.raises(audio.ClipError, match=reason):
            audio.probe(str(path))


def test_an_io_error_is_not_a_clip_error(tmp_path, monkeypatch):
    """A disk hiccup must reach the caller as OSError (retried next run), not as a cached ClipError."""
    path = write(tmp_path / "ok.wav", np.zeros(1600, np.float32), 16000)

    def eio(*a, **k):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(audio.sf, "SoundFile", eio)
    with pytest.raises(OSError):
        audio.load(path)
    monkeypatch.setattr("builtins.open", eio)
    with pytest.raises(OSError):
        audio.file_sha1(path)
