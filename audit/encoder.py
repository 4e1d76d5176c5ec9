"""Load a frozen SpeechBrain speaker encoder from a Hugging Face id or a local folder.

Any SpeechBrain `EncoderClassifier` works (x-vector: 512-d, ECAPA: 192-d); its `encode_batch(wavs,
wav_lens)` maps padded 16 kHz audio (B, T) with relative lengths (B,) to embeddings (B, 1, D).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from audit.errors import UserError

DEFAULT_ENCODER = "speechbrain/spkrec-xvect-voxceleb"
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def encoder_key(source: str) -> str:
    """A short name that changes when the encoder's weights do: it keys the embedding cache."""
    if os.path.isdir(source):
        folder = Path(source).resolve()
        stamp = [str(folder)] + [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                                 for p in sorted(folder.glob("*.ckpt"))]
        digest = hashlib.sha1("\n".join(stamp).encode()).hexdigest()[:10]
        return f"{folder.name}-{digest}"
    return source.replace("/", "--")


def load_encoder(source: str, cache_dir: Path):
    """The encoder, in eval mode with gradients off. A bad `source` is a UserError."""
    logging.getLogger("speechbrain").setLevel(logging.WARNING)
    from speechbrain.inference.speaker import EncoderClassifier

    savedir = cache_dir / "encoders" / encoder_key(source)
    if os.path.isdir(source):
        folder = os.path.abspath(source)
        if not os.path.isfile(os.path.join(folder, "hyperparams.yaml")):
            raise UserError(f"--encoder {source}: the folder has no hyperparams.yaml (not a SpeechBrain model)")
        # Without this override SpeechBrain resolves the checkpoints on the hub, not in the folder.
        kwargs = dict(source=folder, overrides={"pretrained_path": folder})
    elif _HUB_ID.match(source):
        kwargs = dict(source=source)
    else:
        raise UserError(f"--encoder {source}: neither a local folder nor a Hugging Face id like {DEFAULT_ENCODER}")
    try:
        encoder = EncoderClassifier.from_hparams(savedir=str(savedir), **kwargs)
    except Exception as e:
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise UserError(f"--encoder {source}: could not load it ({reason}); check the id and network "
                        "access, or pass a local SpeechBrain folder") from None
    if encoder is None or not hasattr(encoder, "encode_batch") or "embedding_model" not in encoder.mods:
        raise UserError(f"--encoder {source}: not a SpeechBrain speaker EncoderClassifier")
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder
