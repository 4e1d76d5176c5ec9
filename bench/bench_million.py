"""Scaling of the whole `--embeddings` run, 10k to 1M clips: wall seconds, peak RSS, seconds per stage, F1.

Notation: N clips, D embedding dim (512, as x-vectors), K classes (50). For each size a seeded set of
well-separated synthetic classes is written (emb.npy (N, D) float32, manifest.csv with fake paths:
`--embeddings` never reads audio), 2% of the labels are flipped to another class, and the real CLI runs
as a subprocess:

    python -m audit --data manifest.csv --embeddings emb.npy --out OUT --accelerator cpu --no-progress

Peak RSS is the child's own (getrusage of the waited child); a watchdog polls its RSS and, past
--rss-cap-mb, sends SIGABRT: `python -X faulthandler` then prints the Python stack, which names the
stage that broke (kept in OUT.stderr). F1 compares issues.csv's rows with the flipped rows.

    .venv/bin/python bench/bench_million.py --sizes 10000 100000 --data-issues   # ~5 min on 2 cores
    .venv/bin/python bench/bench_million.py --sizes 1000000 --data-issues        # ~5 min more; 1M x 512 = 2 GB
    .venv/bin/python bench/bench_million.py --sizes 100000 -- --pca-dim 0        # options after -- go to the CLI

Writes bench/out/million/<N>/ (data, OUT, stderr) and prints a markdown table (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIM = 512  # x-vector width, the default encoder's
CLASSES = 50
FLIP_RATE = 0.02
CLASS_SPREAD = 0.35  # noise per dimension / centre spread per dimension: classes far apart (CV accuracy ~1)
LATENT = 16  # each class varies mostly along its own few directions, as real embeddings do
ISOTROPIC_NOISE = 1.0  # --kind isotropic: noise per dimension = the centres' spread: every direction is noise
CHUNK = 65_536  # rows generated at once: the generator's memory stays flat as N grows
STAGES = ("manifest", "embeddings", "heads", "ranking", "data_issues")  # summary.json "seconds"
# the rest of the wall time: interpreter start, imports, the 2-D map, writing outputs and report.html


def make_set(n: int, folder: Path, seed: int = 0, dim: int = DIM, kind: str = "clustered") -> tuple[Path, Path, np.ndarray]:
    """emb.npy (N, D) float32, manifest.csv (path,label) with 2% flipped labels; returns them and the flipped rows.

    clustered: each class is its centre plus small noise plus variation along its own LATENT directions
    (low intrinsic dimension, as real embeddings). isotropic: centre plus noise as large as the centres'
    spread in every direction (intrinsic dimension ~D: the k-NN graph's hardest case; classes stay separable).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLASSES, dim)).astype(np.float32)  # (K, D)
    bases = rng.standard_normal((CLASSES, LATENT, dim)).astype(np.float32) / np.sqrt(LATENT)  # (K, L, D)
    truth = rng.permutation(np.arange(n) % CLASSES)  # (N,) balanced classes
    flipped = np.sort(rng.choice(n, size=int(round(FLIP_RATE * n)), replace=False))
    given = truth.copy()
    given[flipped] = (truth[flipped] + rng.integers(1, CLASSES, len(flipped))) % CLASSES  # always another class
    emb_path = folder / "emb.npy"
    emb = np.lib.format.open_memmap(emb_path, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, CHUNK):
        y = truth[start:start + CHUNK]  # (b,)
        if kind == "isotropic":
            emb[start:start + len(y)] = centres[y] + ISOTROPIC_NOISE * rng.standard_normal((len(y), dim), np.float32)
            continue
        z = rng.standard_normal((len(y), LATENT)).astype(np.float32)  # (b, L)
        x = centres[y] + CLASS_SPREAD * rng.standard_normal((len(y), dim)).astype(np.float32)  # (b, D)
        for c in np.unique(y):
            rows = y == c
            x[rows] += 2 * CLASS_SPREAD * (z[rows] @ bases[c])  # (b_c, D)
        emb[start:start + len(y)] = x
    emb.flush()
    del emb
    manifest = folder / "manifest.csv"
    with open(manifest, "w") as f:
        f.write("path,label\n")
        f.writelines(f"clips/{i:07d}.wav,c{g:02d}\n" for i, g in enumerate(given))
    np.save(folder / "flipped.npy", flipped)
    return emb_path, manifest, flipped


def run_cli(emb: Path, manifest: Path, out: Path, rss_cap_mb: float, extra: list[str]) -> dict:
    """Runs the CLI once; wall seconds, peak RSS (MB), return code, and where it was stopped if capped."""
    cmd = [sys.executable, "-X", "faulthandler", "-m", "audit", "--data", str(manifest), "--embeddings", str(emb),
           "--out", str(out), "--accelerator", "cpu", "--no-progress", *extra]
    stderr = open(f"{out}.stderr", "w")
    start = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=stderr, stderr=subprocess.STDOUT)
    capped, trace, done = [], [], threading.Event()  # trace: (seconds, RSS MB) every 2 s

    def watch():  # never reaps the child (poll() would race os.wait4 below)
        while not done.wait(0.5):
            try:
                rss = int(Path(f"/proc/{child.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
            except (OSError, IndexError):
                continue
            trace.append((round(time.perf_counter() - start, 1), round(rss)))
            if rss > rss_cap_mb and not capped:
                capped.append(time.perf_counter() - start)
                os.kill(child.pid, signal.SIGABRT)  # faulthandler prints the stack: the stage that broke

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(child.pid, 0)  # usage: the child's own peak RSS
    wall = time.perf_counter() - start
    done.set()
    watcher.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    stderr.close()
    return dict(wall_s=wall, peak_rss_mb=usage.ru_maxrss / 1024, rc=child.returncode,
                capped_at_s=capped[0] if capped else None, rss_trace=trace[::4])


def f1(out: Path, flipped: np.ndarray) -> dict:
    """The flagged set (issues.csv) against the flips; precision@k of the quality ranking (k = flips)."""
    import pandas as pd

    flagged = set(pd.read_csv(out / "issues.csv", usecols=["row"])["row"].tolist())
    truth = set(flipped.tolist())
    hit = len(flagged & truth)
    precision, recall = hit / max(1, len(flagged)), hit / max(1, len(truth))
    scores = pd.read_csv(out / "scores.csv", usecols=["row", "label_quality"])
    top = scores.nsmallest(len(truth), "label_quality", keep="first")["row"]
    return dict(precision=precision, recall=recall, f1=2 * precision * recall / max(1e-12, precision + recall),
                n_flagged=len(flagged), precision_at_k=len(set(top) & truth) / max(1, len(truth)))


def data_issues_direct(folder: Path, sample: int = 2000, seed: int = 0) -> dict:
    """The data-issues stage alone, in a fresh process, as the run calls it (so it is measured even where an
    earlier stage breaks): its seconds, the k-NN graph's seconds and recall@10 against exact search on
    `sample` rows, and the process's peak RSS. pred_probs: 0.9 on the given label (what the heads give)."""
    done = subprocess.run([sys.executable, __file__, "--direct", str(folder), "--seed", str(seed),
                           "--sample", str(sample)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _direct(args) -> None:
    import pandas as pd

    sys.path.insert(0, str(ROOT))
    from audit import datalab

    emb = np.load(args.direct / "emb.npy")  # (N, D)
    labels = pd.read_csv(args.direct / "manifest.csv", usecols=["label"])["label"].str[1:].astype(int).to_numpy()
    n, k = len(emb), datalab.KNN_K
    probs = np.full((n, CLASSES), 0.1 / (CLASSES - 1))  # (N, K)
    probs[np.arange(n), labels] = 0.9
    built, build = {}, datalab.knn_graph

    def knn_graph(*a, **kw):  # the graph Datalab gets, kept for the recall check, and its seconds
        start = time.perf_counter()
        built["graph"] = build(*a, **kw)
        built["seconds"] = time.perf_counter() - start
        return built["graph"]

    datalab.knn_graph = knn_graph
    start = time.perf_counter()
    datalab.find_data_issues(emb, labels, probs, [""] * n, user_order=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = np.sort(np.random.default_rng(args.seed).choice(n, min(n, args.sample), replace=False))
    _, exact = datalab.exact_knn(emb, k, rows=rows)  # (S, k)
    got = built["graph"].indices.reshape(n, k)[rows]  # (S, k)
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(got, exact)])
    print(json.dumps(dict(direct_data_issues_s=seconds, direct_knn_s=built["seconds"], direct_peak_rss_mb=peak,
                          knn_recall=float(recall), knn_exact=n <= datalab.EXACT_KNN_MAX)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "million")
    parser.add_argument("--rss-cap-mb", type=float, default=12_000,
                        help="stop the run (SIGABRT, stack printed) past this RSS: keeps a shared machine alive")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=DIM, help="embedding width (ECAPA frame features: 6144)")
    parser.add_argument("--kind", choices=("clustered", "isotropic"), default="clustered",
                        help="clustered: low intrinsic dimension, as real embeddings; isotropic: noise in every "
                             "direction, the k-NN graph's hardest case")
    parser.add_argument("--data-issues", action="store_true",
                        help="also run the data-issues stage alone in a fresh process: its seconds and peak RSS, "
                             "and the k-NN graph's recall@10 against exact search on 2,000 rows")
    parser.add_argument("--direct", type=Path, help=argparse.SUPPRESS)  # the child of --data-issues
    parser.add_argument("--sample", type=int, default=2000, help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", help="more CLI options after --, e.g. -- --pca-dim 0")
    args = parser.parse_args()
    if args.direct:
        return _direct(args)
    rows = []
    for n in args.sizes:
        folder = args.work / (str(n) if (args.dim, args.kind) == (DIM, "clustered") else f"{n}-{args.dim}-{args.kind}")
        t = time.perf_counter()
        emb, manifest, flipped = make_set(n, folder, args.seed, args.dim, args.kind)
        made = time.perf_counter() - t
        out = folder / "OUT"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        run = run_cli(emb, manifest, out, args.rss_cap_mb, args.extra)
        summary_file = out / "summary.json"
        summary = json.loads(summary_file.read_text()) if run["rc"] == 0 and summary_file.exists() else {}
        seconds = summary.get("seconds", {})
        row = dict(n=n, dim=args.dim, kind=args.kind, generate_s=made, **run, seconds=seconds,
                   **(f1(out, flipped) if run["rc"] == 0 else {}),
                   **(data_issues_direct(folder, seed=args.seed) if args.data_issues else {}))
        rows.append(row)
        (folder / "result.json").write_text(json.dumps(row, indent=1))
        print(json.dumps({k: v for k, v in row.items() if k != "rss_trace"}), flush=True)
    print()
    print("| clips | wall s | peak RSS MB | " + " | ".join(f"{s} s/1k" for s in (*STAGES, "rest"))
          + " | F1 | precision@k | k-NN recall@10 | data_issues alone: s/1k, k-NN s, peak RSS MB |")
    print("|---:|---:|---:|" + "---:|" * (len(STAGES) + 1) + "---:|---:|---:|---:|")
    for r in rows:
        sec = dict(r["seconds"])
        if sec:
            sec["rest"] = r["wall_s"] - sum(sec[s] for s in STAGES)
        per_k = [f"{sec[s] / (r['n'] / 1000):.3f}" if s in sec else "-" for s in (*STAGES, "rest")]
        status = f"{r['f1']:.3f}" if "f1" in r else f"failed (rc {r['rc']}" + (
            f", RSS cap at {r['capped_at_s']:.0f} s)" if r["capped_at_s"] else ")")
        knn = f"{r['knn_recall']:.4f}" + (" (exact)" if r["knn_exact"] else "") if "knn_recall" in r else "-"
        pak = f"{r['precision_at_k']:.3f}" if "precision_at_k" in r else "-"
        alone = (f"{r['direct_data_issues_s'] / (r['n'] / 1000):.3f}, {r['direct_knn_s']:.0f}, "
                 f"{r['direct_peak_rss_mb']:,.0f}") if "direct_data_issues_s" in r else "-"
        print(f"| {r['n']:,} | {r['wall_s']:.0f} | {r['peak_rss_mb']:,.0f} | " + " | ".join(per_k)
              + f" | {status} | {pak} | {knn} | {alone} |")


if __name__ == "__main__":
    main()
