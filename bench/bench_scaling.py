"""Benchmark: the embedding stage's cost and memory as the dataset grows, and 1 vs 2 CPU ranks.

    python bench/bench_scaling.py [--sizes 1000 4000 16000] [--ranks 1 2] [--ranks-at 4000]

Clips are synthetic (generated on the fly into a temp folder): 8 kHz noise-plus-tone wavs whose
lengths are drawn from FSDD's own length distribution, labels 0-9 in the names (the tone's pitch
follows the label, so the heads train on a learnable problem, as with real data). The encoder is an
x-vector of the hub's layout with random weights (tests/fixtures): the default encoder's exact
architecture, so the same cost per clip as the real one. Each point is a full `python -m audit`
run in its own process (CPU unless --accelerator gpu); clips/s comes from the embedding stage's own seconds in
summary.json, peak memory from its peak_rss_mb (the run's process, its ranks and loader workers). Writes bench/out/scaling.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))


def fsdd_lengths() -> np.ndarray:
    from conftest import fsdd_recordings

    return np.array([sf.info(p).frames for p in sorted(fsdd_recordings().glob("*.wav"))])


def make_clips(folder: Path, n: int, lengths: np.ndarray, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frames in enumerate(rng.choice(lengths, n)):
        t = np.arange(frames) / 8000
        pitch = 200 + 70 * (i % 10) + rng.uniform(-20, 20)  # the label is audible: the heads have something to learn
        wav = 0.1 * rng.standard_normal(frames) + 0.3 * np.sin(2 * np.pi * pitch * t)
        sf.write(folder / f"{i % 10}_synth_{i}.wav", wav.astype(np.float32), 8000, subtype="PCM_16")


def run(data: Path, encoder: Path, out: Path, devices: int, accelerator: str) -> dict:
    cmd = [sys.executable, "-m", "audit", "--data", str(data), "--encoder", str(encoder), "--out", str(out),
           "--accelerator", accelerator, "--devices", str(devices), "--no-progress", "--top", "0"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    summary = json.loads((out / "summary.json").read_text())
    seconds = summary["seconds"]["embeddings"]
    return {"clips": summary["n_clips"], "devices": devices, "embed_seconds": seconds,
            "clips_per_s": summary["n_clips"] / seconds, "heads_seconds": summary["seconds"]["heads"],
            "peak_rss_mb_embeddings": summary["peak_rss_mb_after_embeddings"],
            "peak_rss_mb": summary["peak_rss_mb"], "seconds": summary["seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--ranks-at", type=int, default=4000, help="size at which 1 vs 2 ranks are compared")
    p.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"), help="gpu on a GPU machine")
    p.add_argument("--encoder", default=None, help="default: an x-vector of the hub's layout, random weights")
    args = p.parse_args()
    from build_xvector import build_xvector

    work = Path(tempfile.mkdtemp())
    encoder = Path(args.encoder) if args.encoder else build_xvector(work / "xvector")
    lengths = fsdd_lengths()
    results = []
    for n in sorted(set(args.sizes) | {args.ranks_at}):
        data = work / f"clips-{n}"
        make_clips(data, n, lengths)
        for devices in (args.ranks if n == args.ranks_at else [1]):
            r = run(data, encoder, work / f"out-{n}-{devices}", devices, args.accelerator)
            results.append(r)
            print(json.dumps(r), flush=True)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(results, indent=2))
    print("\n| clips | CPU ranks | embedding s | clips/s | s per 1k clips | heads s | peak RSS MB, embedding stage | peak RSS MB, whole run |\n|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['clips']} | {r['devices']} | {r['embed_seconds']:.1f} | {r['clips_per_s']:.0f} | "
              f"{1000 * r['embed_seconds'] / r['clips']:.2f} | {r['heads_seconds']:.2f} | {r['peak_rss_mb_embeddings']:.0f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
