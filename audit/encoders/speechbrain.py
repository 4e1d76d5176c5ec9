"""Load a frozen SpeechBrain speaker encoder and embed padded batches as if each clip were alone.

Notation: B clips, T samples, D embedding dim. Any SpeechBrain `EncoderClassifier` works (x-vector:
512-d, ECAPA: 192-d). A hub id is first fetched to a local snapshot folder (audit/encoders/__init__.py:
its path names the revision), so hub and local encoders are loaded, and keyed in the cache, the same way.

Which representation is pooled (`features`) matters more than any head: the final speaker
embedding is trained to ignore what is said, the frame-level features that feed its statistics
pooling still carry it. Per family, by architecture:
    embedding          the final embedding (ECAPA 192-d, x-vector 512-d): speaker identity
    frames             mean and std over each clip's valid frames of the input to the statistics
                       pooling: ECAPA's multi-layer feature aggregation (3,072 channels -> 6,144-d),
                       the x-vector's last TDNN layer (1,500 channels -> 3,000-d)
    frames+embedding   both, concatenated
Pooling only over valid frames keeps a padded batch equal to each clip alone.

`load_encoder` checks once, in a fraction of a second, that a short clip padded in a batch still
gets the embedding it gets alone: audit/padding.py patches private SpeechBrain methods, and a
SpeechBrain release that moves them must stop the run, not silently change every embedding.
"""

from __future__ import annotations

import functools
import logging
from importlib import metadata
from pathlib import Path

import torch

from audit import padding
from audit import steps as st
from audit.audio import SAMPLE_RATE  # VoxCeleb speaker encoders: 16 kHz
from audit.errors import UserError, one_line
from audit.options import DEFAULT_FEATURES, FEATURES

HAS_STEPS = True
PROJECTION_SEED = 0  # part of what a cached frames feature means: never change it without PIPELINE_VERSION


OPTIONS = ("features", "frames_dim")  # of audit.encoders.FAMILY_OPTIONS: what this family takes


def settings(opts, spec: str) -> dict:
    """The cache-key settings of a SpeechBrain encoder: which layer is pooled, its projection, steps."""
    if opts.layer is not None:
        raise UserError(f"--layer {opts.layer}: for transformers encoders; {spec} is a SpeechBrain encoder, which "
                        f"chooses its representation with --features ({', '.join(FEATURES)})")
    features = opts.features or DEFAULT_FEATURES
    wide = features != "embedding" and opts.frames_dim
    out = dict(features=features, **({"frames_dim": opts.frames_dim} if wide else {}))
    if opts.multi_label and opts.step_heads:  # a tag-set run's shards also hold steps: a cache of its own
        out["steps"] = f"{st.STEP_SECONDS}s x{st.STEP_DIM} <= {st.MAX_STEPS}"
    return out


class SpeechBrainEmbedder(torch.nn.Module):
    """A loaded EncoderClassifier behind the families' `embed(wavs, lens, steps)`."""

    def __init__(self, model, features: str, frames_dim: int | None):
        super().__init__()
        self.model, self.features, self.frames_dim = model, features, frames_dim

    @torch.inference_mode()
    def embed(self, wavs: torch.Tensor, lens: torch.Tensor, steps: bool = False):
        self.model.device = wavs.device  # encode_batch moves inputs to `device`, which `.to()` does not update
        return encode_with_steps(self.model, wavs, lens, self.features, self.frames_dim, steps=steps)


def load(encoder, opts, savedir: Path) -> SpeechBrainEmbedder:
    return SpeechBrainEmbedder(load_encoder(encoder.path, savedir), opts.features or DEFAULT_FEATURES, opts.frames_dim)




def load_encoder(folder: Path, savedir: Path):
    """The encoder in `folder` (audit.encoders.resolve), in eval mode with gradients off, padding-checked."""
    logging.getLogger("speechbrain").setLevel(logging.WARNING)
    from speechbrain.inference.speaker import EncoderClassifier

    folder = str(folder)
    try:
        # Without the override SpeechBrain resolves the checkpoints on the hub, not in the folder.
        encoder = EncoderClassifier.from_hparams(source=folder, savedir=str(savedir),
                                                 overrides={"pretrained_path": folder})
    except Exception as e:
        reason = one_line(e)
        raise UserError(f"--encoder {folder}: could not load it ({reason}); check the id and network "
                        "access, or pass a local SpeechBrain folder") from None
    if encoder is None or not hasattr(encoder, "encode_batch") or "embedding_model" not in encoder.mods:
        raise UserError(f"--encoder {folder}: not a SpeechBrain speaker EncoderClassifier")
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    check_padding(encoder)
    return encoder


def encode(encoder, wavs: torch.Tensor, lens: torch.Tensor, features: str = "embedding",
           frames_dim: int | None = None) -> torch.Tensor:
    """Features (B, D) of a padded batch wavs (B, T), lens (B,), each as if encoded alone."""
    return encode_with_steps(encoder, wavs, lens, features, frames_dim, steps=False)[0]


def encode_with_steps(encoder, wavs: torch.Tensor, lens: torch.Tensor, features: str = "embedding",
                      frames_dim: int | None = None, steps: bool = True):
    """(features (B, D), steps (B, S, STEP_DIM) float32, step counts (B,)): encode() plus each clip's
    multiple-instance steps (audit/steps.py) from the same forward pass; (features, None, None) without."""
    assert features in FEATURES, features
    padding.reflect_padding(encoder)
    frames, frame_lens = padding.frame_lengths(encoder, wavs, lens)  # (B,), (B,)
    captured = []
    pooling = _statistics_pooling(encoder)
    hook = pooling.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        with padding.clip_frames(encoder, frames):
            emb = encoder.encode_batch(wavs, frame_lens).squeeze(1)  # (B, D)
    finally:
        hook.remove()
    x = captured[0]
    if not _channels_first(pooling):
        x = x.transpose(1, 2)  # the x-vector pools (B, L, C): make it (B, C, L) as ECAPA's
    frames = frames.to(x.device)
    if features == "embedding":
        out = emb
    else:
        stats = project(pooled_stats(x.float(), frames), frames_dim)  # (B, P)
        out = stats if features == "frames" else torch.cat([stats, emb.float()], dim=1)
    if not steps:
        return out, None, None
    hop = encoder.mods.compute_features.compute_STFT.hop_length  # samples at 16 kHz
    width = max(1, round(st.STEP_SECONDS * SAMPLE_RATE / hop))
    means, counts = st.step_means(x.float(), frames, width)  # (B, S, C), (B,)
    if means.shape[-1] > st.STEP_DIM:
        means = means @ projection(means.shape[-1], st.STEP_DIM).to(means.device)
    return out, means, counts


def project(stats: torch.Tensor, dim: int | None) -> torch.Tensor:
    """(B, 2C) -> (B, dim) by a fixed random orthonormal projection (seeded; the same on every machine).

    Data-independent, so each clip's cache entry stays its own; distances are kept to a few percent
    (Johnson-Lindenstrauss) while the cache and rank 0's memory shrink 6x for ECAPA (6,144 -> 1,024).
    """
    if not dim or stats.shape[1] <= dim:
        return stats
    return stats @ projection(stats.shape[1], dim).to(stats.device, stats.dtype)


@functools.lru_cache(maxsize=4)
def projection(width: int, dim: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(PROJECTION_SEED)
    q, _ = torch.linalg.qr(torch.randn(width, dim, generator=g, dtype=torch.float64))  # (width, dim) orthonormal
    return q.float()


def pooled_stats(x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Mean and std over each clip's first frames[b] frames: x (B, C, L), frames (B,) -> (B, 2C)."""
    valid = (torch.arange(x.shape[-1], device=x.device)[None, :] < frames[:, None]).to(x.dtype)  # (B, L)
    n = valid.sum(1, keepdim=True)  # (B, 1)
    mean = (x * valid[:, None, :]).sum(-1) / n  # (B, C)
    var = (((x - mean[..., None]) * valid[:, None, :]) ** 2).sum(-1) / n  # (B, C)
    return torch.cat([mean, var.clamp_min(1e-10).sqrt()], dim=1)


def _statistics_pooling(encoder):
    from speechbrain.lobes.models.ECAPA_TDNN import AttentiveStatisticsPooling
    from speechbrain.nnet.pooling import StatisticsPooling

    for module in encoder.mods.embedding_model.modules():
        if isinstance(module, (AttentiveStatisticsPooling, StatisticsPooling)):
            return module
    raise UserError("--features frames: this encoder has no statistics pooling layer (ECAPA and x-vector do); "
                    "use --features embedding")


def _channels_first(pooling) -> bool:
    from speechbrain.lobes.models.ECAPA_TDNN import AttentiveStatisticsPooling

    return isinstance(pooling, AttentiveStatisticsPooling)


def check_padding(encoder) -> None:
    """A UserError if a short clip in a padded batch no longer gets the features it gets alone."""
    ok, detail = padding.padded_vs_alone(lambda wavs, lens: encode(encoder, wavs, lens))
    if not ok:
        version = metadata.version("speechbrain")
        raise UserError(f"SpeechBrain {version}: a clip in a padded batch no longer gets the embedding it gets alone "
                        f"({detail}); audit's padding fix does not fit this version: install the tested "
                        "versions with `pip install -c constraints.txt -e .`")
