"""Which speech representation ranks label errors best on a set: Whisper tiny.en's hidden states vs ECAPA's.

    .venv/bin/python bench/real_sets.py ravdess                  # once: the set (needs its fetched mirror)
    .venv/bin/python bench/embed_sets.py --sets ravdess          # once: ECAPA frames (auto's pick on speech)
    .venv/bin/python bench/speech_reps.py [--set ravdess] [--repeats 3]

Whisper: each clip of the set goes once through audit's own transformers encoder (audit/encoders/
transformers.py, ../shared/models/whisper-tiny.en or $AUDIT_WHISPER_DIR), in batches of 8, and every
hidden state is pooled as `--layer` would pool it (the mean over the encoder frames covering the clip),
so "layer i" here is what `--encoder whisper-tiny.en --layer i` embeds. ECAPA: bench/embed_sets.py's
stored frames (the default features). Each representation, and ECAPA frames beside a Whisper layer (each
standardized: what a two-encoder `--encoders` run concatenates), is scored by `audit.evaluate` at 5%
uniform flips, the run's defaults: AP and F1, mean of the repeats.
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
BATCH = 8


def whisper_states(manifest: Path) -> dict:
    """{"layer i": (N, 384) for every hidden state, "last": (N, 384)} of the set's clips, in manifest order."""
    import pandas as pd
    import soundfile as sf
    import torch
    import torchaudio
    from conftest import SHARED
    from tqdm.auto import tqdm

    from audit.encoders.transformers import load_hf_encoder

    folder = Path(os.environ.get("AUDIT_WHISPER_DIR", SHARED / "models" / "whisper-tiny.en"))
    enc = load_hf_encoder(folder, layer="last")
    grabbed: dict = {}
    pool_once = enc._pool

    def pool_all(out, pool, pool_last):  # every state as --layer i pools it, then the one the encoder returns
        for i, x in enumerate(out.hidden_states):
            grabbed.setdefault(f"layer {i}", []).append(pool(x).float().numpy())
        result = pool_once(out, pool, pool_last)
        grabbed.setdefault("last", []).append(result.numpy())
        return result

    enc._pool = pool_all
    table = pd.read_csv(manifest)
    wavs = []
    for path in table["path"]:
        x, sr = sf.read(manifest.parent / path, dtype="float32", always_2d=True)
        wavs.append(torchaudio.functional.resample(torch.from_numpy(x.mean(1)), sr, 16000))  # (T,)
    for start in tqdm(range(0, len(wavs), BATCH), desc="whisper", unit="batch"):
        part = wavs[start:start + BATCH]
        n = torch.tensor([len(w) for w in part])  # (B,)
        padded = torch.nn.utils.rnn.pad_sequence(part, batch_first=True)  # (B, T)
        enc.embed(padded, n / padded.shape[1])
    return {k: np.concatenate(v) for k, v in grabbed.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default="ravdess")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import pandas as pd
    from bench_encoders import manifest_of
    from efficientat_reps import print_scores, standardized
    from embed_sets import load

    manifest = manifest_of(args.set)
    t = time.perf_counter()
    reps = whisper_states(manifest)
    print(f"whisper: {len(reps['last'])} clips, {time.perf_counter() - t:.0f} s", flush=True)
    stored = load(args.set)
    labels_csv = pd.read_csv(manifest)["label"].astype(str).to_numpy()
    classes, labels = np.unique(labels_csv, return_inverse=True)
    assert len(stored["emb"]) == len(labels) and list(stored["classes"]) == list(classes), "stored set differs"
    assert (np.asarray(stored["classes"])[stored["labels"]] == labels_csv).all(), "stored rows in another order"

    ecapa = stored["emb"]
    layers = [k for k in reps if k.startswith("layer")]  # the middle one (picked unmeasured) and last pair
    reps = {"ecapa frames (auto's pick)": ecapa, **{f"whisper {k}": v for k, v in reps.items()}}
    reps |= {f"ecapa frames + whisper {k}": np.hstack([standardized(ecapa), standardized(reps[f'whisper {k}'])])
             for k in (layers[len(layers) // 2], "last")}
    print_scores(args.set, reps, manifest, labels, len(classes), args.repeats)


if __name__ == "__main__":
    main()
