"""Make a padded batch give every clip the embedding it gets alone.

Notation: B clips, T samples, L frames, C channels. SpeechBrain's speaker encoders pad each "same"
convolution with a *reflection* of the signal's edge. Alone, a clip's last frames see their own
reflection; in a zero-padded batch they see the padding instead, and through the dilated layers
that reaches deep into a short clip (measured on FSDD with ECAPA: cosine similarity to the clip
alone as low as 0.78 for 9 frames of padding). `reflect_padding(encoder)` replaces the padding
step of every such convolution so that, per clip, the frames after its end hold the reflection of
its own edge: each clip's valid outputs then equal its outputs alone, up to float rounding
(measured: relative difference < 3e-6, cosine > 0.9999998).

SpeechBrain's x-vector pooling also adds fresh random noise (1e-5 to 9e-5) to every clip's mean,
even in eval mode, so no two runs agree; `reflect_padding` replaces it with the noise's midpoint.

`frame_lengths` gives the exact frame count of each clip (the STFT is centred, so n samples make
n // hop + 1 frames), and the relative lengths SpeechBrain's masks must use to count those frames.
"""

from __future__ import annotations

import contextlib

import torch

PADDING_CHECK_TOLERANCE = 1e-3  # relative; measured 3e-6 (SpeechBrain) and < 1e-6 (transformers) when it holds
CHECK_RATE = 16_000  # the default encoders' sample rate (audio.SAMPLE_RATE): the check's signal is 1 s of it


def padded_vs_alone(encode, rate: int = CHECK_RATE) -> tuple[bool, str]:
    """(passes, detail): does a 0.5 s clip padded beside a 1 s one get what it gets alone?

    `encode(wavs (B, T), lens (B,)) -> (B, D)`: any encoder family's padded-batch call. The one check
    every family runs at load (audit/encoders/); an exception counts as a failure, with its message in
    `detail` (a release that moved what the padding fixes rely on). `rate`: the encoder's, in Hz.
    """
    from audit.errors import one_line

    g = torch.Generator().manual_seed(0)
    t = torch.arange(rate) / rate
    signal = 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(rate, generator=g)  # (T,) 1 s
    batch = torch.zeros(2, rate)  # (2, T): the 0.5 s clip's row is half padding
    batch[0, : rate // 2], batch[1] = signal[: rate // 2], signal
    try:
        with torch.inference_mode():
            alone = encode(batch[:1, : rate // 2], torch.ones(1))[0]  # (D,)
            together = encode(batch, torch.tensor([0.5, 1.0]))[0]  # (D,)
        diff = float((together - alone).norm() / alone.norm().clamp_min(1e-12))
    except Exception as e:
        return False, f"{type(e).__name__}: {one_line(e, 200)}"
    return diff <= PADDING_CHECK_TOLERANCE, f"relative difference {diff:.2g}"


class _State:
    frames: torch.Tensor | None = None  # (B,) valid frames of each clip in the batch being encoded


def frame_lengths(encoder, wavs: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames (B,) long, frame-relative lengths (B,)) for a padded batch wavs (B, T), lens (B,)."""
    hop = encoder.mods.compute_features.compute_STFT.hop_length
    samples = (lens * wavs.shape[1]).round().long()  # (B,)
    frames = samples // hop + 1  # (B,)
    total = wavs.shape[1] // hop + 1
    # A quarter frame short of the end: SpeechBrain both rounds (normalization, x-vector pooling) and
    # compares (ECAPA's masks: frame < length) these, and exact quotients can land a hair above n.
    return frames, (frames.to(lens.dtype) - 0.25) / total


def reflect_padding(encoder) -> None:
    """Makes the encoder's reflect-padded 'same' convolutions reflect each clip at its own end (once)."""
    from speechbrain.nnet.CNN import Conv1d, get_padding_elem
    from speechbrain.nnet.pooling import StatisticsPooling

    if getattr(encoder, "_audit_reflect_state", None) is not None:
        return
    state = _State()
    for module in encoder.mods.embedding_model.modules():
        if isinstance(module, StatisticsPooling):
            module._get_gauss_noise = _steady_noise(module.eps)
    for module in encoder.mods.embedding_model.modules():
        if (isinstance(module, Conv1d) and module.padding == "same" and module.kernel_size > 1
                and module.padding_mode == "reflect" and module.stride == 1):
            module._manage_padding = _per_clip_padding(module, state, get_padding_elem)
    encoder._audit_reflect_state = state


@contextlib.contextmanager
def clip_frames(encoder, frames: torch.Tensor):
    """Within the block, patched convolutions reflect each clip at its own end (`frames` (B,))."""
    state = encoder._audit_reflect_state
    state.frames = frames
    try:
        yield
    finally:
        state.frames = None


def _steady_noise(eps: float):
    def noise(shape, device="cpu"):
        return torch.full(shape, 5 * eps, device=device)  # the midpoint of SpeechBrain's eps..9 eps

    return noise


def _per_clip_padding(module, state: _State, get_padding_elem):
    original = module._manage_padding  # SpeechBrain's: F.pad(x, (left, right), mode="reflect")

    def manage_padding(x, kernel_size, dilation, stride):
        frames = state.frames  # x: (B, C, L), channels first inside SpeechBrain's Conv1d
        if frames is None or x.shape[0] != len(frames) or bool((frames >= x.shape[-1]).all()):
            return original(x, kernel_size, dilation, stride)
        left, right = get_padding_elem(module.in_channels, stride, kernel_size, dilation)
        u = torch.arange(-left, x.shape[-1] + right, device=x.device)  # (left + L + right,)
        n = frames.to(x.device)[:, None]  # (B, 1)
        index = torch.where(u < n, u.abs(), 2 * (n - 1) - u).clamp(0, x.shape[-1] - 1)  # (B, left + L + right)
        return x.gather(2, index[:, None, :].expand(-1, x.shape[1], -1))  # (B, C, left + L + right)

    return manage_padding
