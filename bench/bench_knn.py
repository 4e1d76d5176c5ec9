"""The k-NN graph Datalab gets, on hard data: NN-descent settings and projections, seconds and recall@10.

    .venv/bin/python bench/bench_knn.py --emb bench/out/million/200000-512-isotropic/emb.npy \\
        --variant default --variant neighbors=20 --variant delta=0.01 --variant project=128

Each variant runs in a fresh process (numba's compile is paid by each, as by every audit run) through
audit.datalab.knn_graph with the named settings patched in; recall@10 is against exact search on
--sample rows. Variants: default; neighbors=C (NN-descent candidates); delta=X, iters=I (pynndescent's
early stop and iteration cap); any other NNDescent argument (n_trees=8); project=P (search a P-dim projection, exact re-rank: KNN_PROJECT_FROM
lowered to P).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def one(emb_path: Path, variant: str, sample: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from audit import datalab

    emb = np.load(emb_path, mmap_mode="r")
    for setting in filter(None, variant.split(",")):
        if setting == "default":
            continue
        name, value = setting.split("=")
        if name == "neighbors":
            datalab.NN_DESCENT_NEIGHBORS = int(value)
        elif name == "delta":
            datalab.NN_DESCENT_OPTIONS = {**datalab.NN_DESCENT_OPTIONS, "delta": float(value)}
        elif name == "iters":
            datalab.NN_DESCENT_OPTIONS = {**datalab.NN_DESCENT_OPTIONS, "n_iters": int(value)}
        elif name == "candidates":
            datalab.KNN_CANDIDATES = int(value)
        elif name == "project":
            datalab.KNN_PROJECT_FROM, datalab.KNN_PROJECT_DIM = int(value), int(value)
        else:  # any other pynndescent.NNDescent argument, e.g. n_trees=8
            datalab.NN_DESCENT_OPTIONS = {**datalab.NN_DESCENT_OPTIONS, name: int(value) if value.lstrip("-").isdigit() else float(value)}
    start = time.perf_counter()
    graph = datalab.knn_graph(emb)
    seconds = time.perf_counter() - start
    n, k = len(emb), datalab.KNN_K
    rows = np.sort(np.random.default_rng(0).choice(n, min(n, sample), replace=False))
    exact_dist, exact = datalab.exact_knn(emb, k, rows=rows)
    got = graph.indices.reshape(n, k)[rows]
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, exact)]))
    # how far the neighbours found are, against the true ones: near 1 where a miss is a near-tie
    found_dist = graph.data.reshape(n, k)[rows]
    distance_ratio = float(np.mean(found_dist.mean(1) / np.maximum(exact_dist.mean(1), 1e-12)))
    return dict(variant=variant, n=n, dim=emb.shape[1], seconds=round(seconds, 1), recall_at_10=round(recall, 4),
                mean_distance_vs_exact=round(distance_ratio, 4),
                peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--emb", type=Path, required=True)
    p.add_argument("--variant", action="append", default=[])
    p.add_argument("--sample", type=int, default=2000)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(one(args.emb, args.child, args.sample)))
        return
    for variant in args.variant or ["default"]:
        done = subprocess.run([sys.executable, __file__, "--emb", str(args.emb), "--sample", str(args.sample),
                               "--child", variant], capture_output=True, text=True)
        print(done.stdout.strip().splitlines()[-1] if done.returncode == 0 else
              json.dumps({"variant": variant, "error": done.stderr[-800:]}), flush=True)


if __name__ == "__main__":
    main()
