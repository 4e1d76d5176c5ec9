"""Embeds every evaluation set once, with the encoder `--encoder auto` picks on it, into bench/out/emb/<set>.npz.

    .venv/bin/python bench/embed_sets.py [--sets esc10 fsdd-digits ...]

The studies that only need embeddings and labels (bench/cut_study.py) read these files, so each set is
embedded once, with audit's own `embed_dataset` and cache (bench/out/cache), at the default features of
the encoder auto picks (bench/bench_encoders.py measured the pick on every set: EfficientAT mn04 on sound
events and instruments, ECAPA frames on speech). Tag sets also store their steps (the step heads' input).
Each file holds emb (N, D) float32, labels (N,) or (N, K), classes, encoder, and for tag sets the steps.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
OUT = ROOT / "bench" / "out"
SOUND = ("esc10", "esc50", "philharmonia")  # auto picks EfficientAT here (bench/RESULTS.md)
SPEECH = ("fsdd-digits", "fsdd-speakers", "words", "ravdess", "arabic-digits", "ukrainian-digits", "bengali-digits")
TAGS = ("multilabel", "multilabel-words")
SETS = SOUND + SPEECH + TAGS


def embed_set(name: str) -> Path:
    from conftest import SHARED, ecapa_dir

    os.environ.setdefault("AUDIT_EFFICIENTAT_DIR", str(SHARED / "models" / "efficientat-mn04"))
    from audit.options import RunOptions
    from audit.pipeline import embed_dataset
    from bench_encoders import manifest_of  # the real sets, or eval_sets' built ones (tag sets included)

    encoder = "efficientat:mn04_as" if name in SOUND else str(ecapa_dir())
    opts = RunOptions(data=str(manifest_of(name)), encoder=encoder, multi_label=name in TAGS,
                      cache_dir=str(OUT / "cache"), accelerator="cpu", progress=False).resolve()
    t = time.perf_counter()
    data = embed_dataset(opts)
    path = OUT / "emb" / f"{name}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {}
    if data.steps is not None:
        extra = {"steps_" + k: np.asarray(v) for k, v in vars(data.steps).items() if v is not None}
    np.savez(path, emb=data.emb.astype(np.float32), labels=data.labels, classes=np.array(data.classes),
             encoder=np.array(encoder.split("/")[-1]), **extra)
    print(f"{name}: {len(data.labels)} clips, {data.emb.shape[1]}-d, {len(data.skipped)} skipped, "
          f"{time.perf_counter() - t:.0f} s -> {path}", flush=True)
    return path


def load(name: str) -> dict:
    """The stored set: emb, labels, classes, encoder, steps (steps.Steps or None)."""
    with np.load(OUT / "emb" / f"{name}.npz") as f:
        d = {k: f[k] for k in f.files}
    steps = None
    parts = {k[len("steps_"):]: v for k, v in d.items() if k.startswith("steps_")}
    if parts:
        from audit.steps import Steps

        steps = Steps(**parts)
    return {"emb": d["emb"], "labels": d["labels"], "classes": list(d["classes"]), "encoder": str(d["encoder"]),
            "steps": steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    for name in args.sets:
        embed_set(name)


if __name__ == "__main__":
    main()
