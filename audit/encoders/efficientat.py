"""EfficientAT: AudioSet MobileNetV3 sound-event encoders, padded batches embedded as if each clip were alone.

Notation: B clips, T samples (32 kHz), M mel bands (128), F spectrogram frames (100 a second), C channels
of the last feature map (960 x width, rounded to a multiple of 8: 384 for mn04), Q its frequency bins
(M / 32 = 4), L its time frames (~F / 32: one per 0.32 s), S steps, K AudioSet classes (527), D feature dim.

The models of Schmid, Koutini & Widmer, "Efficient Large-Scale Audio Tagging via Transformer-to-CNN
Knowledge Distillation" (ICASSP 2023; github.com/fschmid56/EfficientAT, MIT): torchvision's MobileNetV3-Large
scaled by a width (mn04: 0.4, mn10: 1.0, mn40: 4.0) with one input channel, channel squeeze-excitation and
an MLP head over 527 AudioSet classes. The architecture is written here (upstream's models/mn/, inference
only, with its module names so that a release state dict loads strictly); no torchvision needed.

Front end (upstream's AugmentMelSTFT in eval mode): mono 32 kHz -> pre-emphasis [-0.97, 1] -> centred STFT
(n_fft 1,024, periodic=False Hann window of 800 samples, hop 320) -> power -> 128 Kaldi mel banks from 0
to 15 kHz (a zero weight for the Nyquist bin) -> log(x + 1e-5) -> (x + 4.5) / 5: (B, M, F).

`features` picks what is pooled from the last feature map (B, C, Q, L):
    embedding          its mean over frequency and time (the model's own pooled feature, what the
                       classifier sees): (B, C)
    frames             averaged over frequency, then mean and std over its L time frames: (B, 2C)
    frames+embedding   both, concatenated: (B, 3C)
and the steps (for multi-label step heads) are the map averaged over frequency, one step per time
frame: (B, S, C) with S the longest clip's L, each clip's count of valid steps beside.

Why equal-length groups: every convolution (kernel 3 or 5, zero-padded borders) sees the samples after
a clip's end, and each channel squeeze-excitation scales its channels by their mean over frequency AND
time of the whole map, so zero padding changes every frame of a shorter clip. So a batch's clips are
grouped by equal valid length and each group runs unpadded (as transformers.py does for group-norm models):
exact, batched on fixed-length data, one clip at a time where every length differs.

Weights: `resolve` takes a release name (efficientat:mn10_as), found in $AUDIT_EFFICIENTAT_DIR, else in
the cache ($AUDIT_CACHE or ~/.cache/audit, efficientat/), else downloaded there once and checked against
its SHA-256 pinned in RELEASES, or a local .pt file whose name holds its width (mn04_as_mAP_432.pt).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import uuid
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from audit.errors import UserError, one_line

log = logging.getLogger(__name__)

SAMPLE_RATE = 32_000  # what every EfficientAT AudioSet model was trained on
HAS_STEPS = True  # encode(..., steps=True): one step per time frame of the last feature map
N_FFT = 1024
WIN_LENGTH = 800  # 25 ms, zero-padded to N_FFT by torch.stft
HOP = 320  # 10 ms: 100 spectrogram frames a second
N_MELS = 128
FMIN = 0.0
FMAX = SAMPLE_RATE // 2 - 2_000 // 2  # 15,000 Hz: upstream's fmax=None default (fmax_aug_range 2,000), unaugmented
VTLN_LOW, VTLN_HIGH = 100.0, -500.0  # as upstream passes them; warp factor 1.0, so no warping
PREEMPHASIS = (-0.97, 1.0)  # y[t] = x[t + 1] - 0.97 x[t]
LOG_OFFSET = 1e-5
NORM_SHIFT, NORM_SCALE = 4.5, 5.0  # upstream's "fast normalization": (log mel + 4.5) / 5
MIN_SAMPLES = N_FFT  # shorter clips are zero-padded to 32 ms: the centred STFT reflects n_fft / 2 samples each side
N_CLASSES = 527  # AudioSet's ontology classes (class_labels_indices.csv)
BN_EPS = 0.001  # upstream's BatchNorm2d(eps=0.001, momentum=0.01); the momentum never matters in eval
SE_REDUCTION = 4  # upstream's se_r: the squeeze-excitation bottleneck is C / 4 (rounded to 8)
TAIL_EXPANSION = 6  # the last 1x1 conv: 160 -> 960 channels (x width)
HEAD_HIDDEN = 1280  # the MLP head's hidden width (x width)
DIVISOR = 8  # every channel count is rounded to a multiple of 8 (make_divisible)
VAR_FLOOR = 1e-10  # as audit/encoders/speechbrain.py pooled_stats: a constant channel's std is 1e-5, never a NaN-prone 0
from audit.options import FEATURES  # noqa: E402 (one home: what --features takes)

# MobileNetV3-Large's inverted residual blocks (torchvision's table; upstream's strides (2, 2, 2, 2), no
# dilation, no reduced tail): input, kernel, expanded, output channels (before the width), squeeze-excitation,
# hard-swish (else ReLU), stride. 1 stride-2 stem + 4 stride-2 blocks: the map is 32x smaller both ways.
BLOCKS = (
    (16, 3, 16, 16, False, False, 1),
    (16, 3, 64, 24, False, False, 2),
    (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2),
    (40, 5, 120, 40, True, False, 1),
    (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2),
    (80, 3, 200, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 480, 112, True, True, 1),
    (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2),
    (160, 5, 960, 160, True, True, 1),
    (160, 5, 960, 160, True, True, 1),
)

PREFIX = "efficientat:"
DIR_ENV = "AUDIT_EFFICIENTAT_DIR"  # a folder where release files already lie: checked before any download
RELEASE_URL = "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/"
# name -> (release file, SHA-256). Only mn04's file was at hand to hash; a download whose SHA-256 is None
# is accepted and its digest logged as "not pinned", to be written here once checked.
RELEASES = {
    "mn01_as": ("mn01_as_mAP_298.pt", None),
    "mn02_as": ("mn02_as_mAP_378.pt", None),
    "mn04_as": ("mn04_as_mAP_432.pt", "899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c"),
    "mn05_as": ("mn05_as_mAP_443.pt", None),
    "mn10_as": ("mn10_as_mAP_471.pt", None),
    "mn20_as": ("mn20_as_mAP_478.pt", None),
    "mn30_as": ("mn30_as_mAP_482.pt", None),
    "mn40_as": ("mn40_as_mAP_484.pt", None),
    "mn40_as_ext": ("mn40_as_ext_mAP_487.pt", None),  # the same mn40, distilled from a larger teacher ensemble
}
WIDTHS = {"mn01": 0.1, "mn02": 0.2, "mn04": 0.4, "mn05": 0.5, "mn06": 0.6, "mn08": 0.8, "mn10": 1.0,
          "mn12": 1.2, "mn14": 1.4, "mn16": 1.6, "mn20": 2.0, "mn30": 3.0, "mn40": 4.0}  # upstream's NAME_TO_WIDTH
_WIDTH_IN_NAME = re.compile(r"(?<![a-z])mn(\d\d)(?!\d)")  # "dymn04" (a different architecture) does not match
# release variants that load into this architecture but need another front end (hop, mels) or head (fc)
_VARIANT = re.compile(r"_(hop|mels)_\d|_fc\b|_fc_")


# ---------------------------------------------------------------------------------------------- the model


def make_divisible(v: float, divisor: int = DIVISOR) -> int:
    """`v` rounded to the nearest multiple of `divisor`, at least `divisor` and never 10% below `v` (TF's rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def conv_bn_act(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act=None) -> nn.Sequential:
    """torchvision's ConvNormActivation as upstream builds it: names 0 (conv), 1 (norm), 2 (activation)."""
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=0.01)]
    return nn.Sequential(*layers, act(inplace=True)) if act else nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """Channel squeeze-excitation: channels scaled by a gate of their mean over frequency and time."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(channels, squeeze), nn.Linear(squeeze, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(F.relu(self.fc1(x.mean((2, 3)))))  # (B, C): the whole map's mean, padding included
        return torch.sigmoid(scale)[:, :, None, None] * x  # (B, C, Q, L)


class ConcurrentSEBlock(nn.Module):
    """Upstream's wrapper of concurrent SE layers; with se_dims "c" it holds one, so its max aggregation is it."""

    def __init__(self, channels: int):
        super().__init__()
        squeeze = make_divisible(channels // SE_REDUCTION)
        self.conc_se_layers = nn.ModuleList([SqueezeExcitation(channels, squeeze)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](x)


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, kernel: int, c_exp: int, c_out: int, se: bool, hardswish: bool, stride: int):
        super().__init__()
        act = nn.Hardswish if hardswish else nn.ReLU
        layers = [conv_bn_act(c_in, c_exp, 1, act=act)] if c_exp != c_in else []  # expand
        layers.append(conv_bn_act(c_exp, c_exp, kernel, stride, groups=c_exp, act=act))  # depthwise
        if se:
            layers.append(ConcurrentSEBlock(c_exp))
        layers.append(conv_bn_act(c_exp, c_out, 1))  # project, no activation
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return y + x if self.residual else y


class MobileNet(nn.Module):
    """Upstream's MN at a width, head "mlp": features (B, 1, M, F) -> (B, C, Q, L), classifier -> (B, K) logits."""

    def __init__(self, width: float):
        super().__init__()
        def ch(c: int) -> int:
            return make_divisible(c * width)

        layers = [conv_bn_act(1, ch(BLOCKS[0][0]), 3, 2, act=nn.Hardswish)]  # the stem, stride 2
        layers += [InvertedResidual(ch(i), k, ch(e), ch(o), se, hs, s) for i, k, e, o, se, hs, s in BLOCKS]
        last = ch(BLOCKS[-1][3])
        self.channels = TAIL_EXPANSION * last  # C: 384 for mn04, 960 for mn10
        layers.append(conv_bn_act(last, self.channels, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(self.channels, ch(HEAD_HIDDEN)),
            nn.Hardswish(inplace=True), nn.Dropout(0.2), nn.Linear(ch(HEAD_HIDDEN), N_CLASSES))


class MelFrontEnd(nn.Module):
    """Upstream's AugmentMelSTFT in eval mode: wavs (B, T) at 32 kHz -> normalised log mel (B, M, F)."""

    def __init__(self):
        super().__init__()
        import torchaudio.compliance.kaldi as kaldi

        banks, _ = kaldi.get_mel_banks(N_MELS, N_FFT, float(SAMPLE_RATE), FMIN, FMAX, VTLN_LOW, VTLN_HIGH, 1.0)
        self.register_buffer("mel", F.pad(banks, (0, 1)), persistent=False)  # (M, N_FFT / 2 + 1)
        self.register_buffer("window", torch.hann_window(WIN_LENGTH, periodic=False), persistent=False)
        self.register_buffer("preemphasis", torch.tensor([[PREEMPHASIS]]), persistent=False)  # (1, 1, 2)

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        # always float32 (upstream disables autocast for its mel too): under --precision bf16/16-mixed a CUDA
        # autocast would hand the STFT half-precision samples
        with torch.autocast(wavs.device.type, enabled=False):
            return self._log_mel(wavs.float())

    def _log_mel(self, wavs: torch.Tensor) -> torch.Tensor:
        x = F.conv1d(wavs[:, None], self.preemphasis)[:, 0]  # (B, T - 1)
        spec = torch.stft(x, N_FFT, HOP, WIN_LENGTH, self.window, center=True, return_complex=True)  # (B, 513, F)
        power = torch.view_as_real(spec).pow(2).sum(-1)  # (B, 513, F): re^2 + im^2, as upstream
        return ((self.mel @ power + LOG_OFFSET).log() + NORM_SHIFT) / NORM_SCALE  # (B, M, F)


# -------------------------------------------------------------------------------------------- the encoder


class EfficientATEncoder(nn.Module):
    """A frozen EfficientAT model: `encode(wavs (B, T), lens (B,), features, steps)`, each row as if alone.

    A torch Module so that Lightning (or `.to(device)`) moves it; inputs follow the weights. Always in
    eval mode: BatchNorm on batch statistics would make a clip's features depend on its batch.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, weights: Path, width: float, source: str | None = None):
        super().__init__()
        weights, name = Path(weights), source or str(weights)
        self.frontend, self.net = MelFrontEnd(), MobileNet(width)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"--encoder {name}: {weights.name} is not a PyTorch state dict "
                            f"({one_line(e, 200)})") from None
        if not isinstance(state, dict):
            raise UserError(f"--encoder {name}: {weights.name} holds a {type(state).__name__}, not a state dict")
        try:
            self.net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise UserError(f"--encoder {name}: {weights.name} does not fit EfficientAT's MobileNet at width {width} "
                            f"({one_line(e, 200)})") from None
        self.width, self.channels = width, self.net.channels
        self._identity = f"efficientat:{weights.name}:{weights.stat().st_size}:{file_sha256(weights)}"
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> EfficientATEncoder:
        return super().train(False)  # frozen: see the class docstring

    def identity(self) -> str:
        """The weights file's name, size and SHA-256: changes whenever the weights do."""
        return self._identity

    def feature_dim(self, features: str = "embedding") -> int:
        """D of `encode(..., features)`: C, 2C or 3C."""
        return {"embedding": 1, "frames": 2, "frames+embedding": 3}[features] * self.channels

    @torch.inference_mode()
    def encode(self, wavs: torch.Tensor, lens: torch.Tensor, features: str = "embedding", steps: bool = False):
        """(features (B, D) float32, steps (B, S, C) float32 or None, counts (B,) long or None) of zero-padded
        wavs (B, T) at 32 kHz with relative lengths lens (B,); clip b's steps are steps[b, :counts[b]]."""
        assert features in FEATURES, features
        out = parts = None
        for rows, fmap in self._maps(wavs, lens):  # fmap (b, C, Q, L)
            over_time = fmap.mean(2)  # (b, C, L)
            pooled = []
            if features != "embedding":
                var = over_time.var(-1, unbiased=False)  # (b, C)
                pooled += [over_time.mean(-1), var.clamp_min(VAR_FLOOR).sqrt()]  # (b, C) each
            if features != "frames":
                pooled.append(fmap.mean((2, 3)))  # (b, C): upstream's adaptive_avg_pool2d feature
            x = torch.cat(pooled, dim=1)  # (b, D)
            out = x.new_empty(len(wavs), x.shape[1]) if out is None else out
            out[rows.to(out.device)] = x
            if steps:
                parts = parts or [None] * len(wavs)
                for i, r in enumerate(rows.tolist()):
                    parts[r] = over_time[i].T  # (L, C)
        if not steps:
            return out, None, None
        counts = torch.tensor([len(p) for p in parts], device=out.device)  # (B,)
        values = out.new_zeros(len(parts), int(counts.max()), self.channels)  # (B, S, C)
        for b, p in enumerate(parts):
            values[b, : len(p)] = p
        return out, values, counts

    @torch.inference_mode()
    def predict(self, wavs: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """AudioSet class probabilities (B, K) (sigmoid: multi-label) of zero-padded wavs (B, T), lens (B,)."""
        out = None
        for rows, fmap in self._maps(wavs, lens):
            probs = torch.sigmoid(self.net.classifier(fmap))  # (b, K)
            out = probs.new_empty(len(wavs), N_CLASSES) if out is None else out
            out[rows.to(out.device)] = probs
        return out

    def _maps(self, wavs: torch.Tensor, lens: torch.Tensor):
        """(rows (b,), last feature map (b, C, Q, L)) for each group of clips of equal valid length, run unpadded."""
        n_max = wavs.shape[1]
        samples = (lens.detach().float().cpu() * n_max).round().long().clamp(1, n_max)  # (B,)
        device = self.frontend.mel.device
        for n in samples.unique().tolist():
            rows = (samples == n).nonzero()[:, 0]  # (b,)
            clips = wavs[rows.to(wavs.device), :n].to(device, torch.float32)  # (b, n)
            if n < MIN_SAMPLES:
                clips = F.pad(clips, (0, MIN_SAMPLES - n))  # (b, MIN_SAMPLES)
            yield rows, self.net.features(self.frontend(clips)[:, None])  # (b, C, Q, L)


# ---------------------------------------------------------------------------------------------- loading


def claims(source: str) -> bool:
    """Whether `source` names an EfficientAT model (efficientat:<name>) or a .pt weights file."""
    return source.startswith(PREFIX) or source.endswith(".pt")


def load_encoder(source: str) -> EfficientATEncoder:
    """The frozen encoder of `source` (see `resolve`), on the CPU."""
    path = resolve(source)
    return EfficientATEncoder(path, width_of(path.name, source), source)


def resolve(source: str) -> Path:
    """The verified weights file of `source`: efficientat:<name> (local copy, cache or one download) or a .pt path."""
    if source.startswith(PREFIX):
        name = source[len(PREFIX):]
        if name not in RELEASES:
            known = ", ".join(PREFIX + k for k in RELEASES)
            raise UserError(f"--encoder {source}: unknown EfficientAT model; known: {known}")
        filename, sha256 = RELEASES[name]
        local = Path(os.environ[DIR_ENV]) / filename if os.environ.get(DIR_ENV) else None
        if local is not None and local.is_file():
            return _verified(local, sha256, source)
        cached = cache_dir() / filename
        if cached.is_file():
            return _verified(cached, sha256, source)
        _fetch(RELEASE_URL + filename, cached, sha256, source)
        return cached
    path = Path(source).expanduser()
    if not path.is_file():
        raise UserError(f"--encoder {source}: neither an EfficientAT name like {PREFIX}mn10_as nor an existing "
                        ".pt file")
    width_of(path.name, source)
    return path.resolve()


def width_of(filename: str, source: str = "") -> float:
    """The width multiplier an EfficientAT file name holds: mn04_as_mAP_432.pt -> 0.4."""
    m = _WIDTH_IN_NAME.search(filename)
    if not m or f"mn{m[1]}" not in WIDTHS:
        raise UserError(f"--encoder {source or filename}: no EfficientAT width in the file name {filename!r}; name "
                        f"it as the release does (mn10_as_mAP_471.pt: mnNN, NN one of "
                        f"{', '.join(k[2:] for k in WIDTHS)}; dymn models are not supported)")
    if _VARIANT.search(filename):
        raise UserError(f"--encoder {source or filename}: {filename} is a variant with another front end or head "
                        "(hop, mels, fc); audit takes the standard *_as models")
    return WIDTHS[f"mn{m[1]}"]


def cache_dir() -> Path:
    """Where downloaded weights go: $AUDIT_CACHE or ~/.cache/audit, then efficientat/."""
    from audit.options import cache_root

    return Path(cache_root()) / "efficientat"


def download(url: str, dest: Path) -> None:
    """Fetch `url` into `dest` (a test replaces this: no network there)."""
    torch.hub.download_url_to_file(url, str(dest), progress=True)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """The file's SHA-256 (hex), hashed once per size and modification time."""
    st = Path(path).stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


def _verified(path: Path, sha256: str | None, source: str, label: str | None = None) -> Path:
    """`path` if its SHA-256 is the pinned one (none pinned: logged); `label` names it in messages (default: path)."""
    digest, label = file_sha256(path), label or str(path)
    if sha256 is None:
        log.warning("%s: SHA-256 %s (not pinned in audit/encoders/efficientat.py)", label, digest)
    elif digest != sha256:
        raise UserError(f"--encoder {source}: {label} has SHA-256 {digest}, not the release's {sha256}")
    return path


def _fetch(url: str, dest: Path, sha256: str | None, source: str) -> None:
    """Download `url` to `dest` through a temporary file, renamed into place only once its SHA-256 is checked."""
    part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
    try:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            download(url, part)
        except Exception as e:
            raise UserError(f"--encoder {source}: could not download {url} ({one_line(e, 200)}); check network "
                            f"access (on a compute node without internet: run `audit fetch` on a login node first), or put "
                            f"{dest.name} into a folder named by ${DIR_ENV}") from None
        _verified(part, sha256, source, label=f"the download of {url}")
        try:
            os.replace(part, dest)
        except OSError as e:
            raise UserError(f"--encoder {source}: could not store {dest} ({one_line(e, 200)}); set $AUDIT_CACHE "
                            "to a writable folder") from None
    finally:
        part.unlink(missing_ok=True)


# ------------------------------------------------------------------------------- the families' interface

DEFAULT_FEATURES = "embedding"  # chosen by measurement on the sound-event and speech sets (bench/RESULTS.md)


OPTIONS = ("features",)  # of audit.encoders.FAMILY_OPTIONS: what this family takes


def settings(opts, spec: str) -> dict:
    """The cache-key settings of an EfficientAT encoder: what is pooled, and whether steps are stored."""
    if opts.layer is not None:
        raise UserError(f"--layer {opts.layer}: for transformers encoders; {spec} is an EfficientAT model, which "
                        f"chooses its representation with --features ({', '.join(FEATURES)})")
    if opts.frames_dim is not None:
        raise UserError(f"--frames-dim: for SpeechBrain frame features; {spec} is an EfficientAT model "
                        f"(at most {3 * 960 * 4} dims for mn40)")
    out = dict(features=opts.features or DEFAULT_FEATURES)
    if opts.multi_label and opts.step_heads:
        from audit.steps import MAX_STEPS, STEP_DIM

        out["steps"] = f"map frames x{STEP_DIM} <= {MAX_STEPS}"
    return out


class Embedder(nn.Module):
    """EfficientATEncoder behind the families' `embed(wavs, lens, steps)`: steps wider than STEP_DIM
    (mn20 and up) are projected by the fixed seeded projection the SpeechBrain frame features use."""

    def __init__(self, encoder: EfficientATEncoder, features: str):
        super().__init__()
        self.encoder, self.features = encoder, features

    def embed(self, wavs: torch.Tensor, lens: torch.Tensor, steps: bool = False):
        out, values, counts = self.encoder.encode(wavs, lens, self.features, steps=steps)  # (B, D), (B, S, C), (B,)
        if values is not None:
            from audit.encoders.speechbrain import projection
            from audit.steps import STEP_DIM

            if values.shape[-1] > STEP_DIM:
                values = values @ projection(values.shape[-1], STEP_DIM).to(values.device)  # (B, S, STEP_DIM)
        return out, values, counts


def load(encoder, opts, savedir: Path) -> Embedder:
    """The frozen model of a resolved encoder (audit.encoders.Encoder), padding-checked."""
    from audit.padding import padded_vs_alone

    model = EfficientATEncoder(encoder.path, width_of(encoder.path.name, encoder.spec), encoder.spec)
    ok, detail = padded_vs_alone(lambda wavs, lens: model.encode(wavs, lens, "frames+embedding")[0], SAMPLE_RATE)
    if not ok:
        raise UserError(f"--encoder {encoder.spec}: a clip in a padded batch no longer gets the features it gets alone "
                        f"({detail}); please report this with your torch version")
    return Embedder(model, opts.features or DEFAULT_FEATURES)
