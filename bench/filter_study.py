"""Which cleanlab rule turns good out-of-fold probabilities into the flagged set, on every set.

    .venv/bin/python bench/filter_study.py [--sets fsdd-digits fsdd-speakers words] [--features frames]

The heads are fitted once per (set, noise kind, repeat) on 5% flipped labels, with audit's default
representation and head; every cleanlab `filter_by` rule is then applied to the same probabilities,
so the rules are compared on identical inputs. Uses the sets and cache of bench/eval_sets.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path

import numpy as np

from eval_sets import OUT, build, representation

FILTERS = ("both", "prune_by_noise_rate", "prune_by_class", "confident_learning", "predicted_neq_given",
           "low_self_confidence", "low_normalized_margin")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["fsdd-digits", "fsdd-speakers", "words"])
    p.add_argument("--features", default="frames")
    p.add_argument("--pca-dim", type=int, default=128)
    p.add_argument("--l2", default="0.01")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--filters", nargs="+", default=list(FILTERS), choices=FILTERS)
    p.add_argument("--out", default=str(OUT / "filter_study.json"))
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import ecapa_dir

    from audit import evaluate, heads
    from audit.folds import stratified_folds
    from audit.label_issues import find_label_issues
    from audit.options import NOISE_KINDS
    from audit.options import RunOptions
    from audit.pipeline import embed_dataset

    l2 = args.l2 if args.l2 == "auto" else float(args.l2)
    rows = []
    for set_name in args.sets:
        data = embed_dataset(RunOptions(data=str(build(set_name, OUT / "sets")), encoder=str(ecapa_dir()),
                                        features="frames+embedding", frames_dim=None, cache_dir=str(OUT / "cache"), accelerator="cpu",
                                        progress=False).resolve())
        x, k = representation(data.emb, args.features), len(data.classes)
        clean = heads.out_of_fold_probs(x, data.labels, stratified_folds(data.labels, 5, 0), k, l2=l2,
                                        pca_dim=args.pca_dim)
        confusion = np.stack([clean[data.labels == c].mean(0) for c in range(k)])
        for kind in NOISE_KINDS:
            scores = {f: [] for f in args.filters}
            for r in range(args.repeats):
                rng = np.random.default_rng([0, r, 50000])
                noisy, flipped = evaluate.flip_labels(data.labels, k, 0.05, kind, rng, confusion)
                probs = heads.out_of_fold_probs(x, noisy, stratified_folds(noisy, 5, r), k, l2=l2,
                                                pca_dim=args.pca_dim, seed=r)
                for f in args.filters:
                    issues = find_label_issues(noisy, probs, filter_by=f)
                    scores[f].append(evaluate.score(flipped, issues.flagged, issues.quality))
            for f in args.filters:
                row = {"set": set_name, "kind": kind, "features": args.features, "filter_by": f,
                       **{m: float(np.mean([s[m] for s in scores[f]])) for m in ("f1", "precision", "recall", "ap")}}
                rows.append(row)
                print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print("\n| set | noise | features | filter_by | F1 | AP | precision | recall |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | 5% {r['kind']} | {r['features']} | {r['filter_by']} | {r['f1']:.3f} | {r['ap']:.4f} | "
              f"{r['precision']:.3f} | {r['recall']:.3f} |")


if __name__ == "__main__":
    main()
