"""Which encoder for which data: every evaluation set x every encoder, and what `--encoder auto` picks.

    .venv/bin/python bench/bench_encoders.py [--sets esc10 philharmonia ...] [--repeats 2]

Sets: the real ones of bench/real_sets.py (bench/out/real/<set>/manifest.csv: sound events, instruments,
emotional speech, digits and keywords in three other languages) and the built ones of bench/make_sets.py
(FSDD digits and speakers, espeak-ng words). Encoders, with real weights from ../shared/models:
ECAPA (SpeechBrain; frames, the speech default's layer) and EfficientAT mn04 (AudioSet CNN; its pooled
`embedding`, and `frames`). The x-vector, the users' default, has no offline weights here.

Each encoder embeds each set once (as `frames+embedding`: the representations are slices of one
array). Per (set, representation): the 5-fold CV accuracy of the heads on the given labels, then
`audit evaluate`'s own function at 5% and 10% uniform flips (F1, AP, AUROC of audit's flags and
ranking; the reference recipe beside it on the same flips). `auto` is scored with choose.py's own
rule (its sample, folds, heads and log-loss) on the same embeddings, so what it would pick is shown
without embedding the sample twice. Writes bench/out/bench_encoders.json; prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
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
REAL = ("esc10", "esc50", "philharmonia", "ravdess", "arabic-digits", "ukrainian-digits", "bengali-digits")
BUILT = ("fsdd-digits", "words")
ECAPA_EMBEDDING = 192  # the final embedding: the last columns of ECAPA's frames+embedding
EFFICIENTAT_CHANNELS = 384  # mn04's C: frames+embedding = [mean C, std C, embedding C]


def manifest_of(name: str) -> Path:
    if name in REAL:
        path = OUT / "real" / name / "manifest.csv"
        if not path.is_file():
            raise SystemExit(f"{path} missing: run bench/real_sets.py {name} first")
        return path
    from eval_sets import build

    return build(name, OUT / "sets")


def slices(encoder: str, emb: np.ndarray) -> dict:
    if encoder == "ecapa":  # its final embedding feeds only the reference recipe (measured before: bench/RESULTS.md)
        return {"ecapa frames": emb[:, :-ECAPA_EMBEDDING]}
    c = EFFICIENTAT_CHANNELS
    return {"efficientat embedding": emb[:, 2 * c:], "efficientat frames": emb[:, :2 * c]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=list(REAL + BUILT))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.1])
    p.add_argument("--json", default=str(OUT / "bench_encoders.json"))
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from conftest import SHARED, ecapa_dir

    os.environ.setdefault("AUDIT_EFFICIENTAT_DIR", str(SHARED / "models" / "efficientat-mn04"))
    from audit import choose, evaluate, heads
    from audit.folds import fold_ids
    from audit.options import RunOptions
    from audit.pipeline import embed_dataset

    encoders = {"ecapa": str(ecapa_dir()), "efficientat": "efficientat:mn04_as"}
    records = []
    for set_name in args.sets:
        manifest = manifest_of(set_name)
        for enc_name, spec in encoders.items():
            t = time.perf_counter()
            opts = RunOptions(data=str(manifest), encoder=spec, features="frames+embedding", cache_dir=str(OUT / "cache"),
                              accelerator="cpu", progress=False).resolve()
            data = embed_dataset(opts)
            embed_s = time.perf_counter() - t
            k = len(data.classes)
            parts = slices(enc_name, data.emb)
            reference = data.emb[:, -ECAPA_EMBEDDING:] if enc_name == "ecapa" else parts["efficientat embedding"]
            for rep, emb in parts.items():
                folds = fold_ids(data.labels, opts.folds, opts.seed)
                probs = heads.out_of_fold_probs(emb, data.labels, folds, k, l2=opts.l2, pca_dim=opts.pca_dim, seed=0)
                rows = choose.sample_rows(data.labels, choose.SAMPLE_CLIPS, opts.folds, opts.seed)
                y = data.labels[rows]
                sample_probs = heads.out_of_fold_probs(emb[rows], y, fold_ids(y, opts.folds, opts.seed), k,
                                                       l2=opts.l2, pca_dim=opts.pca_dim, seed=0)
                t = time.perf_counter()
                recs = evaluate.evaluate(emb, data.labels, k, opts, noises=args.noise, kind="uniform",
                                         repeats=args.repeats, baseline="reference", reference_emb=reference)
                for rec in recs:
                    row = {"set": set_name, "n": len(data.clips), "classes": k, "representation": rep,
                           "method": rec["method"], "noise": rec["noise"],
                           "cv_accuracy": float((probs.argmax(1) == data.labels).mean()),
                           "sample_log_loss": choose.log_loss(sample_probs, y),
                           "embed_seconds": round(embed_s, 1), "eval_seconds": round(time.perf_counter() - t, 1),
                           **{m: rec[m]["mean"] for m in ("f1", "ap", "auroc", "precision", "recall")}}
                    records.append(row)
                    print(json.dumps(row), flush=True)
            Path(args.json).write_text(json.dumps(records, indent=2))
    print_table(records)


def print_table(records: list[dict]) -> None:
    print("\n| set | representation | CV acc | sample log-loss | noise | F1 | AP | AUROC | reference F1 / AP |")
    print("|---|---|---|---|---|---|---|---|---|")
    by = {}
    for r in records:
        by.setdefault((r["set"], r["representation"], r["noise"]), {})[r["method"]] = r
    for (set_name, rep, noise), m in by.items():
        a, ref = m["audit"], m.get("reference")
        refs = f"{ref['f1']:.3f} / {ref['ap']:.3f}" if ref else ""
        print(f"| {set_name} ({a['n']}, {a['classes']}) | {rep} | {a['cv_accuracy']:.3f} | {a['sample_log_loss']:.3f} | "
              f"{noise:.0%} | {a['f1']:.3f} | {a['ap']:.3f} | {a['auroc']:.3f} | {refs} |")


if __name__ == "__main__":
    main()
