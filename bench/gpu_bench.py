"""What bench/gpu.sh measures, one part at a time; prints bench/RESULTS.md-ready lines.

    python bench/gpu_bench.py --accelerator gpu                 # on a lent GPU machine (bench/gpu.sh)
    python bench/gpu_bench.py --accelerator cpu --tiny          # the same path at a tiny size (tests)

Parts (each a real `python -m audit` run, timings from its summary.json):
  embed     embedding throughput of the x-vector architecture (random weights, the hub's layout) and
            ECAPA (real weights), fp32 vs bf16-mixed, over a --batch-seconds sweep, on synthetic
            clips with FSDD's lengths; peak GPU memory
  decode    decode + resample only (the DataLoader without an encoder): clips/s per worker process
  equal     FSDD subset on this accelerator vs the CPU: the same flagged clips, in the same order?
  post      heads, ranking, Datalab and outputs from --embeddings at --post-size synthetic clips
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
sys.path.insert(0, str(ROOT / "bench"))


def audit(*args: str) -> dict:
    out = args[args.index("--out") + 1]
    done = subprocess.run([sys.executable, "-m", "audit", *args, "--no-progress", "--top", "0"],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"gpu_bench: audit {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return json.loads((Path(out) / "summary.json").read_text())


def part_embed(args, work: Path, lines: list) -> None:
    from bench_scaling import fsdd_lengths, make_clips
    from build_xvector import build_xvector
    from conftest import ecapa_dir

    data = work / "clips"
    make_clips(data, args.clips, fsdd_lengths())
    encoders = {"x-vector (random weights)": build_xvector(work / "xvector"), "ECAPA": ecapa_dir()}
    lines.append("| encoder | precision | batch s | clips | clips/s | peak GPU MB | peak RSS MB |")
    lines.append("|---|---|---|---|---|---|---|")
    for name, folder in encoders.items():
        for precision in args.precisions:
            for batch in args.batch_seconds:
                out = work / f"e-{len(lines)}"
                s = audit("--data", str(data), "--encoder", str(folder), "--out", str(out), "--accelerator",
                          args.accelerator, "--devices", "1", "--precision", precision, "--batch-seconds", str(batch),
                          "--cache-dir", str(out / "cache"), "--features", "embedding")
                rate = s["n_clips"] / s["seconds"]["embeddings"]
                lines.append(f"| {name} | {precision} | {batch:g} | {s['n_clips']} | {rate:.0f} | "
                             f"{s.get('peak_gpu_mb', 0):.0f} | {s['peak_rss_mb']:.0f} |")
                print(lines[-1], flush=True)


def part_decode(args, work: Path, lines: list) -> None:
    from torch.utils.data import DataLoader

    from audit.batching import ClipDataset, collate
    from bench_scaling import fsdd_lengths, make_clips

    data = work / "decode"
    make_clips(data, args.clips, fsdd_lengths())
    files = sorted(str(p) for p in data.glob("*.wav"))
    for workers in sorted({1, args.workers}):
        loader = DataLoader(ClipDataset(files), batch_size=32, collate_fn=collate, num_workers=workers)
        start = time.perf_counter()
        n = sum(len(b.index) for b in loader)
        took = time.perf_counter() - start
        lines.append(f"| decode + hash + health + resample, {workers} worker(s) | {n} clips | {n / took:.0f} clips/s "
                     f"| {n / took / workers:.0f} clips/s per worker |")
        print(lines[-1], flush=True)


def part_equal(args, work: Path, lines: list) -> None:
    import pandas as pd

    from conftest import ecapa_dir, fsdd_recordings

    every = sorted(p.name for p in fsdd_recordings().glob("*.wav"))
    names = every[:: max(1, len(every) // args.equal_clips)][: args.equal_clips]  # every digit and speaker
    folder = work / "fsdd"
    folder.mkdir()
    for n in names:
        os.symlink(fsdd_recordings() / n, folder / n)
    runs = {}
    for acc in ("cpu", args.accelerator):
        out = work / f"eq-{acc}-{len(runs)}"
        audit("--data", str(folder), "--encoder", str(ecapa_dir()), "--out", str(out), "--accelerator", acc,
              "--devices", "1", "--cache-dir", str(out / "cache"), "--folds", "3")
        runs[len(runs)] = pd.read_csv(out / "issues.csv")["path"].tolist()
    same = runs[0] == runs[1]
    lines.append(f"| issues on {args.accelerator} vs CPU, {len(names)} FSDD clips, ECAPA fp32 | "
                 f"{'identical' if same else 'DIFFERENT'} ({len(runs[0])} vs {len(runs[1])} flagged) |")
    print(lines[-1], flush=True)


def part_post(args, work: Path, lines: list) -> None:
    rng = np.random.default_rng(0)
    n, k, d = args.post_size, 50, 512
    centres = rng.normal(0, 1, (k, d)).astype(np.float32)
    labels = rng.integers(0, k, n)
    emb = centres[labels] + rng.normal(0, 0.6, (n, d)).astype(np.float32)
    flipped = rng.random(n) < 0.02
    given = np.where(flipped, (labels + rng.integers(1, k, n)) % k, labels)
    np.save(work / "emb.npy", emb)
    import pandas as pd

    pd.DataFrame({"path": [f"clip{i}.wav" for i in range(n)], "label": given}).to_csv(work / "m.csv", index=False)
    out = work / "post"
    start = time.perf_counter()
    s = audit("--data", str(work / "m.csv"), "--embeddings", str(work / "emb.npy"), "--out", str(out),
              "--accelerator", args.accelerator)
    wall = time.perf_counter() - start
    flagged = pd.read_csv(out / "scores.csv").sort_values("row")["is_label_issue"].to_numpy()
    tp = (flagged & flipped).sum()
    f1 = 2 * tp / max(1, flagged.sum() + flipped.sum())
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in s["seconds"].items())
    lines.append(f"| post-embedding stages, {n} x {d} x {k} classes, 2% flips | wall {wall:.0f} s | "
                 f"peak RSS {s['peak_rss_mb']:.0f} MB | F1 {f1:.3f} | {stages} |")
    print(lines[-1], flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--accelerator", default="gpu", choices=("cpu", "gpu"))
    p.add_argument("--parts", nargs="+", default=["embed", "decode", "equal", "post"])
    p.add_argument("--clips", type=int, default=20000)
    p.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    p.add_argument("--batch-seconds", type=float, nargs="+", default=[64, 256, 1024])
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--equal-clips", type=int, default=300)
    p.add_argument("--post-size", type=int, default=1_000_000)
    p.add_argument("--tiny", action="store_true", help="a few clips everywhere: the path, not the figures")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "gpu.md"))
    args = p.parse_args()
    if args.tiny:
        args.clips, args.batch_seconds, args.precisions = 60, [8.0], ["32-true"]  # 6 per class: 5 folds
        args.equal_clips, args.post_size, args.workers = 30, 2000, 1
    import torch

    device = torch.cuda.get_device_name(0) if args.accelerator == "gpu" else "CPU"
    lines = [f"## {device}, {os.cpu_count()} cores ({time.strftime('%Y-%m-%d')})", ""]
    with tempfile.TemporaryDirectory() as tmp:
        parts = {"embed": part_embed, "decode": part_decode, "equal": part_equal, "post": part_post}
        for part in args.parts:
            work = Path(tmp) / part
            work.mkdir()
            parts[part](args, work, lines)
            lines.append("")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
