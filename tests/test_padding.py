"""The padding maths on their own, and the load-time check that the fix still holds."""

import pytest
import torch
import torch.nn.functional as F

from audit.encoders import resolve
from audit.encoders import speechbrain as enc
from audit import padding
from audit.errors import UserError


class _Conv:
    in_channels = 3


def _pad_fn(left, right):
    state = padding._State()
    module = _Conv()
    module._manage_padding = lambda x, k, d, s: F.pad(x, (left, right), mode="reflect")
    fn = padding._per_clip_padding(module, state, lambda c, s, k, d: (left, right))
    return fn, state


@pytest.mark.parametrize("left, right", [(1, 1), (2, 2), (6, 6)])
def test_each_clip_is_reflected_at_its_own_end(left, right):
    torch.manual_seed(0)
    x = torch.randn(3, 3, 20)  # (B, C, L)
    frames = torch.tensor([20, 13, 8])
    fn, state = _pad_fn(left, right)
    state.frames = frames
    padded = fn(x, 3, 1, 1)  # (B, C, left + L + right)
    assert padded.shape == (3, 3, left + 20 + right)
    for b, n in enumerate(frames.tolist()):
        alone = F.pad(x[b : b + 1, :, :n], (left, right), mode="reflect")[0]  # the clip as if alone
        torch.testing.assert_close(padded[b, :, : left + n + right], alone)


def test_without_frames_the_original_padding_runs():
    x = torch.randn(2, 3, 10)
    fn, state = _pad_fn(2, 2)
    torch.testing.assert_close(fn(x, 5, 1, 1), F.pad(x, (2, 2), mode="reflect"))
    state.frames = torch.tensor([10, 10])  # no clip is short: nothing to fix
    torch.testing.assert_close(fn(x, 5, 1, 1), F.pad(x, (2, 2), mode="reflect"))


def test_frame_lengths_count_centred_stft_frames():
    class Enc:
        class mods:
            class compute_features:
                class compute_STFT:
                    hop_length = 160

    wavs = torch.zeros(3, 16000)
    lens = torch.tensor([1.0, 0.5, 8000 / 16000 + 1 / 16000])
    frames, rel = padding.frame_lengths(Enc, wavs, lens)
    assert frames.tolist() == [16000 // 160 + 1, 8000 // 160 + 1, 8001 // 160 + 1]
    total = 16000 // 160 + 1
    assert ((rel * total).round() == frames).all() and (rel * total < frames).all()  # rounds to n, stays below n


def test_the_load_time_check_passes_with_the_fix(ecapa, tmp_path):
    encoder = enc.load_encoder(resolve(ecapa).path, tmp_path)
    ok, detail = padding.padded_vs_alone(lambda wavs, lens: enc.encode(encoder, wavs, lens))
    assert ok and float(detail.split()[-1]) < 1e-4, detail


def test_the_load_time_check_stops_a_speechbrain_that_breaks_the_fix(ecapa, tmp_path, monkeypatch):
    monkeypatch.setattr(padding, "_per_clip_padding", lambda module, state, get: module._manage_padding)
    with pytest.raises(UserError, match=r"SpeechBrain \d.*no longer gets the embedding"):
        enc.load_encoder(resolve(ecapa).path, tmp_path)


def test_the_shared_check_stops_a_transformers_encoder_that_lets_padding_in():
    from types import SimpleNamespace

    from audit.encoders import transformers as hf_encoder

    hf_encoder.check_padding(SimpleNamespace(encode=lambda wavs, lens: wavs[:, :4000].sum(1, keepdim=True)), "ok")
    with pytest.raises(UserError, match=r"--encoder leaky: with transformers .* no longer gets .*relative difference"):
        hf_encoder.check_padding(SimpleNamespace(encode=lambda wavs, lens: wavs.mean(1, keepdim=True)), "leaky")

    def broken(wavs, lens):
        raise KeyError("last_hidden_state")

    with pytest.raises(UserError, match=r"--encoder gone: .*KeyError: 'last_hidden_state'"):
        hf_encoder.check_padding(SimpleNamespace(encode=broken), "gone")
