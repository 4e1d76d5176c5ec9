"""Encoder families behind one interface: a frozen model that embeds padded batches as if each clip were alone.

Notation: B clips, T samples at the family's rate, D feature dim, S steps, C step channels.

    family        --encoder                                        rate    module
    speechbrain   a hub id or a folder with hyperparams.yaml       16 kHz  speechbrain.py
    transformers  a hub id or a folder with a config.json          16 kHz  transformers.py
    efficientat   efficientat:mn10_as (a release name) or its .pt  32 kHz  efficientat.py

`resolve(spec)` finds an encoder's files once (downloading them the first time) and says which
family it is, its sample rate (the DataLoader decodes to it) and its identity (the cache key);
`settings(encoder, opts)` is what else shapes its features (the cache key too), refusing options its
family does not understand with one line; `load(encoder, opts, savedir)` gives a torch Module whose
`embed(wavs (B, T), lens (B,), steps: bool)` returns features (B, D) float32 and, with `steps`, each
clip's multiple-instance steps (B, S, C) with their counts (B,) (else None, None). Each family checks
at load that a clip padded in a batch gets what it gets alone (audit/padding.py).
Adding a family (BEATs, CLAP, PANNs) is one module with `settings`, `load`, `SAMPLE_RATE`, `HAS_STEPS`
and `OPTIONS` (which of FAMILY_OPTIONS it takes), and a line in `resolve`.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from audit.errors import UserError, one_line

FAMILIES = ("speechbrain", "transformers", "efficientat")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
HUB_SKIP = ["*.h5", "*.msgpack", "*.onnx", "tf_*", "flax_*", "onnx/*"]  # other frameworks' weights: never read
_SMALL_FILE_BYTES = 1 << 20  # hyperparams.yaml and friends are hashed by content, checkpoints by size+time


@dataclass(frozen=True)
class Encoder:
    """An encoder resolved once: its family, where its files are, and what keys its cache."""

    family: str  # one of FAMILIES
    spec: str  # as the user named it
    path: Path  # its local folder (or weights file)
    name: str  # readable, for cache folders
    identity: str  # a digest that changes when any of its files does
    sample_rate: int  # Hz: what the DataLoader decodes clips to
    has_steps: bool  # whether it can give tag sets' multiple-instance steps


def family(name: str):
    """The module of family `name` (imported when first needed: torch and friends stay out of --help)."""
    assert name in FAMILIES, name
    return importlib.import_module(f"audit.encoders.{name}")


def resolve(spec: str) -> Encoder:
    """The encoder `spec` names, its files local (a hub id or release name is downloaded once)."""
    efficientat = family("efficientat")
    if efficientat.claims(spec):
        path = efficientat.resolve(spec)
        return Encoder("efficientat", spec, path, name=path.stem, identity=efficientat.file_sha256(path),
                       sample_rate=efficientat.SAMPLE_RATE, has_steps=efficientat.HAS_STEPS)
    folder = local_folder(spec)
    transformers = family("transformers")
    if transformers.is_transformers_folder(folder):
        kind = "transformers"
    elif (folder / "hyperparams.yaml").is_file():
        kind = "speechbrain"
    else:
        raise UserError(f"--encoder {spec}: the folder has no hyperparams.yaml (not a SpeechBrain model) and no "
                        "config.json of a supported transformers audio model")
    module = family(kind)
    return Encoder(kind, spec, folder, name=folder_name(folder), identity=folder_identity(folder),
                   sample_rate=module.SAMPLE_RATE, has_steps=module.HAS_STEPS)


def settings(encoder: Encoder, opts) -> dict:
    """What shapes this encoder's features besides the clip and its files (keys the cache); a UserError for
    an option its family does not take."""
    return family(encoder.family).settings(opts, encoder.spec)


FAMILY_OPTIONS = ("features", "frames_dim", "layer")  # options only some families take (each module's OPTIONS)


def options_for(encoders: list[Encoder], opts) -> list:
    """Per encoder of a several-encoder run (--encoders), `opts` without the options its family does not take;
    a UserError for an option that no encoder of the run takes."""
    from dataclasses import replace

    takes = [set(family(e.family).OPTIONS) for e in encoders]
    for name in FAMILY_OPTIONS:
        if getattr(opts, name) is not None and not any(name in t for t in takes):
            raise UserError(f"--{name.replace('_', '-')}: none of --encoders {' '.join(e.spec for e in encoders)} "
                            f"takes it ({', '.join(e.family for e in encoders)})")
    return [replace(opts, **{name: None for name in FAMILY_OPTIONS if name not in t}) for t in takes]


def load(encoder: Encoder, opts, savedir: Path):
    """The frozen encoder as a torch Module with `embed(wavs, lens, steps)`, padding-checked, denormals flushed."""
    module = family(encoder.family).load(encoder, opts, savedir)
    flush_denormals(module)
    return module


def flush_denormals(module) -> int:
    """Sets the module's weights and buffers below their dtype's smallest normal number (float32: 1.2e-38) to
    zero; returns how many.

    Trained checkpoints carry such values (SpeechBrain's ECAPA: 73,418, the weights of dead channels), and on
    a CPU every multiply with one can take a microcode assist: ECAPA's forward on 17 FSDD-length clips took
    1.1 s with them and 0.24 s without on this project's Intel CPU, and gave bit-identical embeddings
    (bench/RESULTS.md). A value this small never moves a float32 sum of normal numbers.
    """
    import torch

    count = 0
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_floating_point():
                tiny = (t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)
                count += int(tiny.sum())
                t.masked_fill_(tiny, 0.0)
    return count


def local_folder(spec: str) -> Path:
    """The local folder of `spec`: the folder itself, or the hub snapshot (downloaded once)."""
    if os.path.isdir(spec):
        return Path(spec).resolve()
    if not _HUB_ID.match(spec):
        from audit.options import DEFAULT_ENCODER

        raise UserError(f"--encoder {spec}: neither a local folder, a Hugging Face id like {DEFAULT_ENCODER}, "
                        "nor an EfficientAT name like efficientat:mn10_as")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec, ignore_patterns=HUB_SKIP))
    except Exception as e:  # the hub client raises many types (offline, 404, gated, disk)
        raise UserError(f"--encoder {spec}: could not load it ({one_line(e)}); check the id and network access "
                        "(on a compute node without internet: run `audit fetch` on a login node first), or pass "
                        "a local folder") from None


def folder_identity(path: Path) -> str:
    """A digest that changes when any file of the encoder does (hub snapshots: also the revision)."""
    h = hashlib.sha1(str(path).encode())
    for file in sorted(p for p in (path.iterdir() if path.is_dir() else [path]) if p.is_file()):
        st = file.stat()
        h.update(f"\n{file.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        if st.st_size <= _SMALL_FILE_BYTES:
            h.update(file.read_bytes())
    return h.hexdigest()


def folder_name(folder: Path) -> str:
    """A readable name for cache folders: the hub id's name or the folder's."""
    parts = folder.parts
    if "snapshots" in parts:  # <HF cache>/models--org--name/snapshots/<revision>
        return parts[parts.index("snapshots") - 1].removeprefix("models--")
    return folder.name
