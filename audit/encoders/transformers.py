"""Hugging Face `transformers` audio encoders: padded batches embedded as if each clip were alone.

Notation: B clips, T samples (16 kHz), L frames (the model's output positions), C hidden size,
D embedding dim (D = C), H hidden states (the embedding output, then one per transformer layer).
An optional extra (`pip install -e '.[hf]'`); without it a run that needs it stops with one line.

Each family feeds the model through its own feature extractor (the folder's
preprocessor_config.json), each clip cut to its valid samples first, and pools only what belongs
to the clip, so a batch row equals the clip encoded alone:

    wav2vec2, hubert, wavlm   raw audio, normalised over the clip's own samples, padded with an
      (layer-norm feature     attention mask; mean over the clip's valid frames, counted by the
       encoder: *-large)      model's own _get_feat_extract_output_lengths. The convolutions have no
                              padding and normalise each frame alone, padded frames are zeroed before
                              the positional convolution and masked in attention.
    the same, group-norm      (wav2vec2-base, hubert-base, wavlm-base(-plus)): the first conv layer's
      feature encoder         GroupNorm normalises every channel over the whole padded length, so zero
                              padding changes every frame, and these models were trained without an
                              attention mask. Clips are grouped by equal length and each group runs
                              unpadded: exact, batched on fixed-length data (1 s commands, 5 s
                              ESC-50), one clip at a time where every length differs.
    whisper (encoder only)    the extractor pads every clip alone to 30 s of log-mel (3,000 frames;
                              longer clips: their first 30 s), and the encoder sees no mask, so a
                              clip's input is the same alone or batched; mean over the encoder frames
                              covering the clip: ceil(samples / 320), at most 1,500.
    audio-spectrogram-        the extractor pads or cuts every clip alone to 1,024 fbank frames
      transformer (AST)       (10.24 s; longer clips: their first 10.24 s), so again the input is the
                              same alone or batched; pooled as AST's own pooler: the mean of the
                              CLS and distillation tokens (B, C).

`layer` picks what is pooled (which layer matters more than the head): "last" the model's final
output (after its final layer norm, AST: its pooler output), an int indexes the H hidden states
(0: the embedding output, refused for AST whose CLS tokens there are the same for every clip;
negative from the end), "mean" averages the pooled states of all H.

Not supported: CLAP's audio tower (its extractor takes 48 kHz audio: audit decodes at 16 kHz, so
it would see nothing above 8 kHz, and its default "fusion" truncation picks random crops of clips
over 10 s, so a clip would not get the same embedding twice); data2vec-audio (its five stacked
positional convolutions carry the padding into the clip's last frames despite the mask).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from audit.audio import SAMPLE_RATE
from audit.errors import UserError, one_line
from audit.options import LAYERS  # or an int: an index into the hidden states

FRAMES, WHISPER, AST = "frames", "whisper", "ast"
# config.json model_type -> how it is fed and pooled (see the docstring)
SUPPORTED = {"wav2vec2": FRAMES, "hubert": FRAMES, "wavlm": FRAMES, "whisper": WHISPER,
             "audio-spectrogram-transformer": AST}
NOT_SUPPORTED = {
    "clap": "CLAP's audio tower takes 48 kHz audio and crops long clips at random; audit decodes at 16 kHz "
            "and needs one embedding per clip",
    "data2vec-audio": "its stacked positional convolutions let the padding of a batch change a clip's embedding",
}
HAS_STEPS = False  # tag sets get the clip-statistics heads alone
WHISPER_STRIDE = 2  # encoder frames are 2 mel frames (conv2 has stride 2): 160-sample hop x 2 = 320 samples


OPTIONS = ("layer",)  # of audit.encoders.FAMILY_OPTIONS: what this family takes


def settings(opts, spec: str) -> dict:
    """The cache-key settings of a transformers encoder: the layer pooled."""
    if opts.features not in (None, "embedding"):
        raise UserError(f"--features {opts.features}: for SpeechBrain and EfficientAT encoders; {spec} is a "
                        "transformers model, which chooses its representation with --layer")
    if opts.frames_dim is not None:
        raise UserError(f"--frames-dim: for SpeechBrain frame features; {spec} is a transformers model")
    return dict(layer=str(opts.layer or "last"))


def load(encoder, opts, savedir: Path) -> "HFEncoder":
    return load_hf_encoder(encoder.path, layer=opts.layer or "last", source=encoder.spec)


def model_type(folder: Path) -> str | None:
    """The `model_type` in the folder's config.json; None when there is none (not a transformers model)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None


def is_transformers_folder(folder: Path) -> bool:
    """Whether `folder` holds a transformers audio model audit supports (a config.json: SUPPORTED model_type)."""
    return model_type(folder) in SUPPORTED


class HFEncoder(torch.nn.Module):
    """A frozen transformers audio model: `encode(wavs (B, T), lens (B,)) -> (B, D)`, each row as if alone.

    A torch Module so that Lightning (or `.to(device)`) moves the model; inputs follow the weights.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, model, extractor, family: str, layer: str | int, n_states: int, dim: int):
        super().__init__()
        self.model, self.extractor, self.family = model, extractor, family
        self.layer, self.n_states, self.dim = layer, n_states, dim
        # group-norm feature encoders (wav2vec2-base & co.) must see no padding: see the docstring
        self.group_norm = family == FRAMES and getattr(model.config, "feat_extract_norm", "layer") == "group"

    def embed(self, wavs: torch.Tensor, lens: torch.Tensor, steps: bool = False):
        """The families' call (audit/encoders): features (B, D); transformers models give no steps."""
        return self.encode(wavs, lens), None, None

    @torch.inference_mode()
    def encode(self, wavs: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) float32 on the model's device of zero-padded wavs (B, T), relative lens (B,)."""
        samples = (lens.float().cpu() * wavs.shape[1]).round().long().clamp(1, wavs.shape[1])  # (B,)
        audio = wavs.detach().float().cpu().numpy()  # (B, T) the extractors work on numpy
        clips = [audio[b, :n] for b, n in enumerate(samples.tolist())]  # B x (n_b,)
        if not self.group_norm:
            return self._encode(clips)
        out = None
        for n in samples.unique().tolist():  # equal lengths run together, unpadded
            rows = (samples == n).nonzero()[:, 0]  # (b,)
            emb = self._encode([clips[i] for i in rows.tolist()])  # (b, D)
            out = emb.new_empty(len(clips), emb.shape[1]) if out is None else out
            out[rows.to(out.device)] = emb
        return out

    def _encode(self, clips: list) -> torch.Tensor:
        param = next(self.model.parameters())
        n = torch.tensor([len(c) for c in clips])  # (B,) samples
        if self.family == FRAMES:
            mask = not self.group_norm
            inputs = self.extractor(clips, sampling_rate=SAMPLE_RATE, padding=True, return_attention_mask=mask,
                                    return_tensors="pt")
            kwargs = {"attention_mask": inputs["attention_mask"].to(param.device)} if mask else {}
            with warnings.catch_warnings():  # WavLM hands torch's attention a bool and a float mask: torch warns
                warnings.filterwarnings("ignore", "Support for mismatched key_padding_mask", UserWarning)
                out = self.model(inputs["input_values"].to(param.device, param.dtype), output_hidden_states=True,
                                 **kwargs)  # input_values (B, T') with T' the longest clip
            frames = self.model._get_feat_extract_output_lengths(n)  # (B,)
            last_frames = frames
            if getattr(self.model.config, "add_adapter", False):  # wav2vec2's adapter shortens the last state only
                frames = self.model._get_feat_extract_output_lengths(n, add_adapter=False)  # (B,)
            return self._pool(out, lambda x: mean_valid(x, frames), lambda x: mean_valid(x, last_frames))
        if self.family == WHISPER:
            inputs = self.extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                    device=str(param.device))  # input_features (B, n_mels, 3000)
            out = self.model(inputs["input_features"].to(param.device, param.dtype), output_hidden_states=True)
            hop = self.extractor.hop_length * WHISPER_STRIDE  # 320 samples per encoder frame
            frames = ((n + hop - 1) // hop).clamp(max=out.last_hidden_state.shape[1])  # (B,) ceil(n / 320)
            return self._pool(out, lambda x: mean_valid(x, frames), lambda x: mean_valid(x, frames))
        inputs = self.extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="pt")  # input_values (B, 1024, mels)
        out = self.model(inputs["input_values"].to(param.device, param.dtype), output_hidden_states=True)
        # AST's pooler: the mean of its CLS and distillation tokens (the pooler output for "last")
        return self._pool(out, lambda x: x[:, :2].float().mean(1), None)

    def _pool(self, out, pool, pool_last) -> torch.Tensor:
        """The pooled state (B, C) `layer` names; `pool` maps a hidden state (B, L, C) to (B, C)."""
        states = out.hidden_states  # H x (B, L, C)
        assert len(states) == self.n_states, (len(states), self.n_states)
        if self.layer == "last":
            return (pool_last(out.last_hidden_state) if pool_last else out.pooler_output).float()  # (B, C)
        if self.layer == "mean":
            return torch.stack([pool(x) for x in states]).float().mean(0)  # (B, C)
        return pool(states[self.layer]).float()  # (B, C)


def mean_valid(x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Mean over each clip's first frames[b] frames: x (B, L, C), frames (B,) -> (B, C) float32."""
    frames = frames.to(x.device)
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < frames[:, None]  # (B, L)
    total = x.float().masked_fill(~valid[..., None], 0.0).sum(1)  # (B, C); masked_fill: padded rows may be inf
    return total / frames[:, None].clamp_min(1)


def load_hf_encoder(folder: Path, layer: str | int = "last", source: str | None = None) -> HFEncoder:
    """The transformers audio model in `folder`, frozen, in eval mode, padding-checked; `source` names it in errors."""
    name = source or str(folder)
    kind = model_type(folder)
    if kind in NOT_SUPPORTED:
        raise UserError(f"--encoder {name}: {kind} is not supported ({NOT_SUPPORTED[kind]})")
    if kind not in SUPPORTED:
        found = f"model_type {kind!r}" if kind else "no config.json with a model_type"
        raise UserError(f"--encoder {name}: {found}; transformers audio models audit takes: {', '.join(SUPPORTED)}")
    transformers = _import_transformers(name)
    try:
        extractor = transformers.AutoFeatureExtractor.from_pretrained(str(folder))
    except Exception as e:
        raise UserError(f"--encoder {name}: could not load its feature extractor "
                        f"(preprocessor_config.json): {one_line(e)}") from None
    rate = getattr(extractor, "sampling_rate", None)
    if rate != SAMPLE_RATE:
        raise UserError(f"--encoder {name}: its feature extractor expects {rate} Hz audio; audit decodes clips at "
                        f"{SAMPLE_RATE} Hz, so it takes 16 kHz models only")
    try:
        model = transformers.AutoModel.from_pretrained(str(folder), dtype=torch.float32)
    except Exception as e:
        raise UserError(f"--encoder {name}: could not load the model: {one_line(e)}") from None
    family = SUPPORTED[kind]
    config = model.config
    if family == WHISPER:
        extractor.dither = 0.0  # else fresh noise on every call (when set): a clip would not embed the same twice
        model = model.get_encoder()  # the decoder is never used: let it go
        n_layers, dim = config.encoder_layers, config.d_model
    else:
        n_layers, dim = config.num_hidden_layers, config.hidden_size
        if family == FRAMES and layer == "last" and getattr(config, "add_adapter", False):
            dim = config.output_hidden_size
    n_states = n_layers + 1  # the embedding output, then one per layer
    layer = _check_layer(name, layer, n_states)
    if family == AST and layer == 0:
        raise UserError(f"--encoder {name}: layer 0 of AST pools its learned CLS tokens before any layer has seen "
                        f"the clip (the same for every clip); pick 1..{n_layers}, last or mean")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    encoder = HFEncoder(model, extractor, family, layer, n_states, dim)
    if family == FRAMES:
        check_padding(encoder, name)  # whisper and AST pad every clip alone by construction
    return encoder


def _check_layer(name: str, layer: str | int, n_states: int) -> str | int:
    if isinstance(layer, str) and layer.lstrip("-").isdigit():
        layer = int(layer)
    if isinstance(layer, str) and layer not in LAYERS or isinstance(layer, int) and not -n_states <= layer < n_states:
        raise UserError(f"--encoder {name}: layer {layer!r} is none of {', '.join(LAYERS)} or a hidden state index "
                        f"0..{n_states - 1} (or -{n_states}..-1)")
    return layer if isinstance(layer, str) else layer % n_states


def _import_transformers(name: str):
    try:
        import transformers
    except ImportError:
        raise UserError(f"--encoder {name}: a transformers model needs the optional extra: "
                        "pip install -e '.[hf]'") from None
    # "some weights were not used" (a CTC or classifier head) is expected; loading bars are noise in a run
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def check_padding(encoder: HFEncoder, name: str = "") -> None:
    """A UserError if a short clip in a padded batch no longer gets the embedding it gets alone."""
    from audit.padding import padded_vs_alone

    ok, detail = padded_vs_alone(encoder.encode)
    if not ok:  # a transformers release that changed the calls, outputs or masks used here
        import transformers

        raise UserError(f"--encoder {name}: with transformers {transformers.__version__} a clip in a padded batch "
                        f"no longer gets the embedding it gets alone ({detail}); install the tested versions: "
                        "pip install -c constraints.txt -e '.[hf]'")

