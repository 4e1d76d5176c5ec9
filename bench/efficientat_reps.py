"""Which representation of an EfficientAT model ranks label errors best: its layers, its head, its logits.

    .venv/bin/python bench/real_sets.py esc50                  # once: the set (needs its fetched mirror)
    .venv/bin/python bench/efficientat_reps.py [--set esc50] [--repeats 3]

Each clip of bench/out/real/SET (mono, resampled to 32 kHz, alone: no batching question here) goes once
through the shared mn04 (../shared/models/efficientat-mn04 or $AUDIT_EFFICIENTAT_DIR); kept per clip:
every layer of `features` averaged over frequency and time (the last one is audit's `embedding`), the MLP
head's hidden layer and the 527 AudioSet logits. Each representation (and concatenations of standardized
ones) is scored by `audit.evaluate` at 5% uniform flips, the run's defaults: AP and F1, mean of the repeats.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def embed(manifest: Path) -> dict:
    import pandas as pd
    import soundfile as sf
    import torch
    import torchaudio
    from conftest import SHARED

    from audit.encoders.efficientat import EfficientATEncoder

    folder = Path(os.environ.get("AUDIT_EFFICIENTAT_DIR", SHARED / "models" / "efficientat-mn04"))
    enc = EfficientATEncoder(next(folder.glob("mn04*.pt")), 0.4)
    table = pd.read_csv(manifest)
    rows = []
    for path in table["path"]:
        x, sr = sf.read(manifest.parent / path, dtype="float32", always_2d=True)
        x = torchaudio.functional.resample(torch.from_numpy(x.mean(1))[None], sr, enc.sample_rate)  # (1, T)
        with torch.inference_mode():
            h, out = enc.frontend(x)[:, None], {}
            for i, layer in enumerate(enc.net.features):
                h = layer(h)
                out[f"layer{i}"] = h.mean((2, 3))[0].numpy()  # (C_i,)
            head = enc.net.classifier
            hidden = head[3](head[2](head[1](head[0](h))))  # pool, flatten, linear, hardswish
            out["hidden"], out["logits"] = hidden[0].numpy(), head[5](hidden)[0].numpy()
        rows.append(out)
    return {"labels": table["label"].astype(str).to_numpy(), **{k: np.stack([r[k] for r in rows]) for k in rows[0]}}


def standardized(a: np.ndarray) -> np.ndarray:
    """Each column at mean 0 and standard deviation 1: what concatenating representations needs."""
    return (a - a.mean(0)) / (a.std(0) + 1e-8)


def print_scores(title: str, reps: dict, manifest: Path, labels: np.ndarray, n_classes: int, repeats: int) -> None:
    """A markdown row per representation (name -> (N, D)): `audit.evaluate` at 5% uniform flips, run defaults."""
    from audit import evaluate
    from audit.options import RunOptions

    opts = RunOptions(data=str(manifest), accelerator="cpu", progress=False).resolve()
    print(f"| {title}: representation | D | AP @5% | F1 @5% |\n|---|---:|---:|---:|")
    for name, emb in reps.items():
        r = evaluate.evaluate(emb.astype(np.float32), labels, n_classes, opts, noises=[0.05], kind="uniform",
                              repeats=repeats, baseline=None)[0]
        print(f"| {name} | {emb.shape[1]} | {r['ap']['mean']:.4f} | {r['f1']['mean']:.3f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default="esc50")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    manifest = ROOT / "bench" / "out" / "real" / args.set / "manifest.csv"
    feats = embed(manifest)
    classes, labels = np.unique(feats.pop("labels"), return_inverse=True)
    n = sum(k.startswith("layer") for k in feats)
    z = standardized
    reps = {f"layer{i}" + (" (embedding)" if i == n - 1 else ""): feats[f"layer{i}"] for i in range(n - 6, n)}
    reps |= {"hidden": feats["hidden"], "logits": feats["logits"],
             "embedding + logits": np.hstack([z(feats[f"layer{n - 1}"]), z(feats["logits"])]),
             "last 3 layers": np.hstack([z(feats[f"layer{i}"]) for i in range(n - 3, n)]),
             "last 6 layers": np.hstack([z(feats[f"layer{i}"]) for i in range(n - 6, n)])}
    print_scores(args.set, reps, manifest, labels, len(classes), args.repeats)


if __name__ == "__main__":
    main()
