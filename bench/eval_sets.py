"""Detection quality per representation and head, on every evaluation set, with the reference alongside.

    .venv/bin/python bench/eval_sets.py [--sets fsdd-digits fsdd-speakers words] [--repeats 2]

Each set is built by bench/make_sets.py and embedded once with the real ECAPA weights as
`frames+embedding` (the final 192-d embedding and the 6,144-d pooled MFA frames come from the same
forward pass, so every representation is a slice of one array). Then `audit evaluate`'s own
function flips 5% of the labels (uniform and confusable) and scores each configuration, and the
reference recipe (sklearn LR C=0.01 + cleanlab self-confidence) on the final embedding, all on the
same flips. Tag sets (multilabel*) also get each clip's steps; the step heads join (instance_heads.py)
in "frames, defaults" alone, as in a run with the defaults. Writes bench/out/eval_sets.json and prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from audit.options import NOISE_KINDS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "bench" / "out"
EMBEDDING_DIM = 192  # ECAPA's final embedding: the last columns of frames+embedding
# name -> (representation, l2, pca_dim[, step heads on tag sets: only where a configuration says so])
CONFIGS = {
    "frames, defaults": ("frames", 0.01, "auto", True),  # as a run: PCA, filter_by, step heads by task
    "frames, defaults, no step heads": ("frames", 0.01, "auto"),  # tag sets: the clip statistics alone
    "embedding, l2 0.01": ("embedding", 0.01, None),
    "embedding, l2 auto": ("embedding", "auto", None),
    "frames, pca 128, l2 0.01": ("frames", 0.01, 128),
    "frames rp1024, pca 128, l2 0.01": ("frames rp1024", 0.01, 128),
    "frames, pca 128, l2 auto": ("frames", "auto", 128),
    "frames, pca 256, l2 auto": ("frames", "auto", 256),
    "frames, pca 256, l2 0.01": ("frames", 0.01, 256),
    "frames+embedding, pca 128, l2 auto": ("frames+embedding", "auto", 128),
}


def build(name: str, work: Path) -> Path:
    import make_sets as ms  # bench/ is on sys.path: this script's own folder

    folder = work / name
    if (folder / "manifest.csv").is_file():
        return folder / "manifest.csv"
    if name == "multilabel-words":  # mixtures of the words set's clips
        return ms.build_multilabel_words(folder, build("words", work).parent).manifest
    builder = {"fsdd-digits": ms.build_fsdd_digits, "fsdd-speakers": ms.build_fsdd_speakers,
               "words": ms.build_words, "multilabel": ms.build_multilabel}[name]
    return builder(folder).manifest


def representation(emb: np.ndarray, name: str) -> np.ndarray:
    if name.startswith("frames rp"):  # what --frames-dim P stores: the same fixed projection, applied here
        import torch

        from audit.encoders.speechbrain import project

        return project(torch.from_numpy(emb[:, :-EMBEDDING_DIM]), int(name[len("frames rp"):])).numpy()
    return {"embedding": emb[:, -EMBEDDING_DIM:], "frames": emb[:, :-EMBEDDING_DIM], "frames+embedding": emb}[name]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["fsdd-digits", "fsdd-speakers", "words"])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--kinds", nargs="+", default=list(NOISE_KINDS), choices=NOISE_KINDS)
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--work", default=str(OUT / "sets"))
    p.add_argument("--json", default=str(OUT / "eval_sets.json"), help="where the records go")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from dataclasses import replace

    from conftest import ecapa_dir

    from audit import evaluate
    from audit.options import RunOptions
    from audit.pipeline import embed_dataset

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    records = []
    for set_name in args.sets:
        manifest = build(set_name, work)
        t = time.perf_counter()
        multi = set_name.startswith("multilabel")  # tags = the 2-3 digits or words of each clip
        opts = RunOptions(data=str(manifest), encoder=str(ecapa_dir()), features="frames+embedding", frames_dim=None,
                          multi_label=multi, cache_dir=str(OUT / "cache"), accelerator="cpu", progress=False).resolve()
        data = embed_dataset(opts)
        embed_s = time.perf_counter() - t
        k = len(data.classes)
        print(f"# {set_name}: {len(data.clips)} clips, {k} classes, embedded/loaded in {embed_s:.0f} s", flush=True)
        for kind in (["uniform"] if multi else args.kinds):  # tag sets: one tag dropped or swapped, any tag
            for name in args.configs + ["reference"]:
                rep, l2, pca, *steps = CONFIGS.get(name, ("embedding", 0.01, None))
                t = time.perf_counter()
                rec = evaluate.evaluate(representation(data.emb, rep), data.labels, k,
                                        replace(opts, l2=l2, pca_dim=pca).resolve(), noises=[args.noise], kind=kind,
                                        repeats=args.repeats, baseline="reference" if name == "reference" else None,
                                        steps=data.steps if steps == [True] else None)
                rec = [r for r in rec if r["method"] == ("reference" if name == "reference" else "audit")][0]
                row = {"set": set_name, "n": len(data.clips), "classes": k, "kind": "tags" if multi else kind,
                       "config": name,
                       "seconds": round(time.perf_counter() - t, 1),
                       **{m: rec[m]["mean"] for m in ("f1", "ap", "precision", "recall")},
                       "f1_runs": rec["f1"]["runs"], "ap_runs": rec["ap"]["runs"]}
                records.append(row)
                print(json.dumps(row), flush=True)
    OUT.mkdir(exist_ok=True)
    Path(args.json).write_text(json.dumps(records, indent=2))
    print("\n| set | noise | configuration | F1 | AP | precision | recall | seconds |\n|---|---|---|---|---|---|---|---|")
    for r in records:
        print(f"| {r['set']} ({r['n']}, {r['classes']} classes) | {args.noise:.0%} {r['kind']} | {r['config']} | "
              f"{r['f1']:.3f} | {r['ap']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['seconds']} |")


if __name__ == "__main__":
    main()
