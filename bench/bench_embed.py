"""Benchmark: audit's embedding stage and heads against the reference workflow, same run, same machine.

    python bench/bench_embed.py [--n 1000] [--encoder DIR_OR_ID]

Each part runs in its own process (so its peak memory is its own), on the same FSDD clips:
  peak     fp32 matmul GFLOP/s of this CPU now: the ceiling is peak / (GFLOP per audio second x
           mean clip seconds), so the share of the ceiling reads the same on a noisy machine
  perfile  the reference's loop: read, resample, one encode_batch call per clip (and once more with the
           checkpoint's denormal weights flushed, as audit's loader does: what batching alone gains)
  audit    audit's embedding stage (embed.embed: probe, bucket, DataLoader workers, Lightning
           predict, cache writes), from an empty cache
  breakdown  each piece of the embedding stage alone on the same clips: read, hash, health, mix and
           resample (the decoding workers' share), encoder forward, frame pooling, steps, cache write
  heads    audit's K-fold Lightning heads vs sklearn cross_val_predict(LogisticRegression(C=0.01))
           on the same embeddings
Prints a JSON line per part and a Markdown table; writes bench/out/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
GFLOP_PER_AUDIO_SECOND = {"ecapa": 3.8, "xvect": 0.54}  # measured facts from the project brief


def clips(n: int) -> list[str]:
    from conftest import fsdd_recordings

    files = sorted(str(p) for p in fsdd_recordings().glob("*.wav"))
    step = max(1, len(files) // n)
    return files[::step][:n]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def part_peak(args) -> dict:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    start, k = time.perf_counter(), 0
    while time.perf_counter() - start < 3:
        a @ b
        k += 1
    return {"gflops": k * 2 * 2048**3 / (time.perf_counter() - start) / 1e9, "threads": torch.get_num_threads()}


def part_perfile(args) -> dict:
    import torch

    from audit import audio
    from audit.encoders import resolve
    from audit.encoders.speechbrain import load_encoder

    files = clips(args.n)
    encoder = load_encoder(resolve(args.encoder).path, Path(tempfile.mkdtemp()))
    if args.which == "flushed":  # the same loop with audit's one-time fix of the checkpoint (encoders.flush_denormals)
        from audit.encoders import flush_denormals

        flush_denormals(encoder)
    with torch.inference_mode():
        for f in files[:5]:
            encoder.encode_batch(audio.load(f)[None])
        start = time.perf_counter()
        seconds = 0.0
        for f in files:
            wav = audio.load(f)
            seconds += len(wav) / audio.SAMPLE_RATE
            encoder.encode_batch(wav[None])
        took = time.perf_counter() - start
    return {"clips": len(files), "seconds": took, "clips_per_s": len(files) / took,
            "mean_clip_seconds": seconds / len(files), "peak_rss_mb": peak_rss_mb()}


def part_audit(args) -> dict:
    import numpy as np

    from audit.embed import embed
    from audit.options import RunOptions

    files = clips(args.n)
    opts = RunOptions(encoder=args.encoder, cache_dir=tempfile.mkdtemp(), accelerator="cpu", devices=1,
                      batch_seconds=args.batch_seconds, progress=False).resolve()
    embed(files[:5], opts)  # load the encoder and warm up, as the reference's loop does
    start = time.perf_counter()
    result = embed(files[5:], opts)
    took = time.perf_counter() - start
    np.save(Path(args.scratch) / "emb.npy", embed(files, opts).emb)
    return {"clips": len(files) - 5, "seconds": took, "clips_per_s": (len(files) - 5) / took,
            "failed": len(result.failed), "peak_rss_mb": peak_rss_mb()}


def part_heads(args) -> dict:
    import warnings

    import numpy as np

    from audit.folds import stratified_folds
    from audit.heads import out_of_fold_probs

    emb = np.load(Path(args.scratch) / "emb.npy")
    labels = np.array([int(Path(f).name[0]) for f in clips(args.n)])
    if args.which == "audit":
        folds = stratified_folds(labels, 5, seed=0)
        start = time.perf_counter()
        probs = out_of_fold_probs(emb, labels, folds, 10)
    else:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        warnings.filterwarnings("ignore")
        start = time.perf_counter()
        probs = cross_val_predict(LogisticRegression(C=0.01, max_iter=1000), emb, labels,
                                  cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")
    took = time.perf_counter() - start
    return {"seconds": took, "cv_accuracy": float((probs.argmax(1) == labels).mean()), "peak_rss_mb": peak_rss_mb()}


def part_breakdown(args) -> dict:
    """Each piece of the embedding stage alone, in sequence, on the same clips (seconds for all of them).

    Decoding pieces (read, hash, health, mix + resample) run in the DataLoader workers during the stage,
    beside the encoder; forward, pooling, steps and the cache write run in the main process. `forward` is
    the encoder (fbank, network, the padding fix); `pooling` the frame statistics and their projection
    (--features frames); `steps` what tag sets add (not run at the defaults for class labels).
    """
    from collections import defaultdict

    import numpy as np
    import soundfile as sf
    import torch

    from audit import audio, health
    from audit.batching import bucket_batches
    from audit.cache import ShardStore
    from audit.encoders import resolve
    from audit.encoders import speechbrain as sb
    from audit.options import RunOptions
    from audit.steps import step_means

    files = clips(args.n)
    opts = RunOptions(encoder=args.encoder, cache_dir=tempfile.mkdtemp(), accelerator="cpu", devices=1,
                      batch_seconds=args.batch_seconds, progress=False).resolve()
    took = defaultdict(float)

    def timed(name, fn):
        def wrapper(*a, **kw):
            start = time.perf_counter()
            out = fn(*a, **kw)
            took[name] += time.perf_counter() - start
            return out
        return wrapper

    wavs = []
    for f in files:
        start = time.perf_counter()
        with sf.SoundFile(f) as handle:
            rate, data = handle.samplerate, handle.read(dtype="float32", always_2d=True)
        took["read"] += time.perf_counter() - start
        timed("hash", audio.file_sha1)(f)
        timed("health", lambda: health.to_meta(health.clip_health(data, rate)))()
        wavs.append(timed("mix_resample", lambda: audio._resampler(rate, audio.SAMPLE_RATE)(
            torch.from_numpy(data.mean(axis=1))))())
    from audit.encoders import flush_denormals

    model = sb.load_encoder(resolve(args.encoder).path, Path(tempfile.mkdtemp()))
    flush_denormals(model)  # as audit.encoders.load does
    model.encode_batch = timed("forward", model.encode_batch)
    sb.pooled_stats, sb.project = timed("pooling", sb.pooled_stats), timed("pooling", sb.project)
    features = opts.features or "frames"
    seconds = np.array([len(w) / audio.SAMPLE_RATE for w in wavs])
    batches = bucket_batches(seconds, opts.batch_seconds)
    embs = np.zeros((len(files), 0), np.float32)
    for which in ("warm-up", "run"):
        took.pop("forward", None), took.pop("pooling", None)
        out = []
        for rows in batches:
            longest = max(len(wavs[r]) for r in rows)
            batch = torch.zeros(len(rows), longest)
            for b, r in enumerate(rows):
                batch[b, :len(wavs[r])] = wavs[r]
            lens = torch.tensor([len(wavs[r]) / longest for r in rows])
            with torch.inference_mode():
                out.append(sb.encode_with_steps(model, batch, lens, features, opts.frames_dim, steps=False)[0].numpy())
        embs = np.concatenate(out)
    # steps (tag sets only): the step means of the same frames, timed on their own
    hooked = []
    pooling = sb._statistics_pooling(model)
    handle = pooling.register_forward_pre_hook(lambda m, a: hooked.append(a[0]))
    with torch.inference_mode():
        for rows in batches[:3]:
            longest = max(len(wavs[r]) for r in rows)
            batch = torch.zeros(len(rows), longest)
            for b, r in enumerate(rows):
                batch[b, :len(wavs[r])] = wavs[r]
            model.encode_batch(batch, torch.tensor([len(wavs[r]) / longest for r in rows]))
    handle.remove()
    start = time.perf_counter()
    for x in hooked:
        step_means(x.float(), torch.full((len(x),), x.shape[-1]), 10)
    took["steps (tag sets only; from 3 batches)"] = (time.perf_counter() - start) * len(batches) / 3
    store = ShardStore(Path(tempfile.mkdtemp()))
    start = time.perf_counter()
    for s in range(0, len(files), opts.shard_clips):
        store.write([f"{i:040d}" for i in range(s, min(s + opts.shard_clips, len(files)))], embs[s:s + opts.shard_clips],
                    [], tag="bench", meta={"sha1": ["0" * 40] * len(embs[s:s + opts.shard_clips])})
    took["cache_write"] = time.perf_counter() - start
    return {"clips": len(files), "features": features, "dim": int(embs.shape[1]), "batches": len(batches),
            **{k: round(v, 3) for k, v in took.items()}}


PARTS = {"peak": part_peak, "perfile": part_perfile, "audit": part_audit, "heads": part_heads,
         "breakdown": part_breakdown}


def run_part(name: str, args, extra=()) -> dict:
    cmd = [sys.executable, __file__, "--part", name, "--n", str(args.n), "--encoder", args.encoder,
           "--scratch", args.scratch, "--batch-seconds", str(args.batch_seconds), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps({"part": name, **dict(zip(extra[::2], extra[1::2])), **result}), flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=600, help="FSDD clips (every k-th of the 3,000)")
    p.add_argument("--encoder", default=None, help="default: the ECAPA weights the tests use")
    p.add_argument("--batch-seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=3, help="perfile/audit pairs; the median ratio is reported")
    p.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    p.add_argument("--which", default="audit", help=argparse.SUPPRESS)
    p.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.encoder is None:
        from conftest import ecapa_dir

        args.encoder = str(ecapa_dir())
    if args.part:
        print(json.dumps(PARTS[args.part](args)))
        return
    args.scratch = tempfile.mkdtemp()
    # This machine's speed drifts by +-30% within minutes (other tenants): alternate the two in rounds
    # and report the median of the per-round ratios, each from a pair measured back to back.
    res = {"peak": run_part("peak", args)}
    rounds = [(run_part("perfile", args), run_part("audit", args)) for _ in range(args.rounds)]
    res["perfile_flushed"] = run_part("perfile", args, ("--which", "flushed"))
    ratios = sorted(a["clips_per_s"] / p["clips_per_s"] for p, a in rounds)
    mid = len(rounds) // 2
    res["perfile"], res["audit"] = sorted(rounds, key=lambda r: r[1]["clips_per_s"] / r[0]["clips_per_s"])[mid]
    res["ratios"] = ratios
    res["breakdown"] = run_part("breakdown", args)
    res["heads_audit"] = run_part("heads", args, ("--which", "audit"))
    res["heads_sklearn"] = run_part("heads", args, ("--which", "sklearn"))
    res["peak_after"] = run_part("peak", args)
    kind = next((k for k in GFLOP_PER_AUDIO_SECOND if k in args.encoder.lower()), "ecapa")
    gflops = (res["peak"]["gflops"] + res["peak_after"]["gflops"]) / 2
    ceiling = gflops / (GFLOP_PER_AUDIO_SECOND[kind] * res["perfile"]["mean_clip_seconds"])
    res["summary"] = {"clips": args.n, "encoder": args.encoder, "cpus": os.cpu_count(),
                      "speedup": ratios[mid], "speedups_all_rounds": ratios,
                      "ceiling_clips_per_s": ceiling,
                      "audit_share_of_ceiling": res["audit"]["clips_per_s"] / ceiling,
                      "heads_speedup": res["heads_sklearn"]["seconds"] / res["heads_audit"]["seconds"]}
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    s = res["summary"]
    print(f"""
| measure | value |
|---|---|
| clips (FSDD, every k-th) | {args.n} |
| matmul peak, fp32 | {gflops:.0f} GFLOP/s (before {res['peak']['gflops']:.0f}, after {res['peak_after']['gflops']:.0f}) |
| ceiling ({kind}, {GFLOP_PER_AUDIO_SECOND[kind]} GFLOP per audio s, mean clip {res['perfile']['mean_clip_seconds']:.3f} s) | {ceiling:.0f} clips/s |
| reference per-file loop | {res['perfile']['clips_per_s']:.1f} clips/s, peak RSS {res['perfile']['peak_rss_mb']:.0f} MB |
| the same loop, checkpoint's denormals flushed as audit does (one run) | {res['perfile_flushed']['clips_per_s']:.1f} clips/s: audit {res['audit']['clips_per_s'] / res['perfile_flushed']['clips_per_s']:.2f}x it |
| audit embedding stage | {res['audit']['clips_per_s']:.1f} clips/s, peak RSS {res['audit']['peak_rss_mb']:.0f} MB |
| **speed-up** (median of {args.rounds} back-to-back pairs) | **{s['speedup']:.2f}x** (all: {', '.join(f'{r:.2f}' for r in ratios)}), {100 * s['audit_share_of_ceiling']:.0f}% of the ceiling |
| heads: audit (5 folds, Lightning, L-BFGS) | {res['heads_audit']['seconds']:.2f} s, CV acc {res['heads_audit']['cv_accuracy']:.3f}, peak RSS {res['heads_audit']['peak_rss_mb']:.0f} MB |
| heads: sklearn cross_val_predict LR(C=0.01) | {res['heads_sklearn']['seconds']:.2f} s, CV acc {res['heads_sklearn']['cv_accuracy']:.3f}, peak RSS {res['heads_sklearn']['peak_rss_mb']:.0f} MB |
| **heads speed-up** | **{s['heads_speedup']:.1f}x** |
""")
    b = res["breakdown"]
    stage = res["audit"]["seconds"] * b["clips"] / res["audit"]["clips"]  # the stage's time for all the clips
    print(f"Where the embedding stage's time goes ({b['clips']} clips, features {b['features']}, {b['dim']}-d, "
          f"{b['batches']} batches; each piece alone, in sequence; the stage {stage:.1f} s for as many clips):\n")
    print("| piece | where it runs | seconds | ms per clip | share of the stage |\n|---|---|---:|---:|---:|")
    where = {"read": "worker", "hash": "worker", "health": "worker", "mix_resample": "worker"}
    for name, value in b.items():
        if isinstance(value, float):
            print(f"| {name} | {where.get(name, 'main')} | {value:.2f} | {1000 * value / b['clips']:.2f} | "
                  f"{100 * value / stage:.0f}% |")


if __name__ == "__main__":
    main()
