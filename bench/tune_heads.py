"""What the defaults were chosen from: audit evaluate's metrics over a grid of head and filter choices.

    python bench/tune_heads.py --data DIR --encoder DIR [--cache-dir DIR]

Embeds once (cached), then for each L2 penalty and cleanlab filter scores F1 and AP at 5% and 10%
uniform noise (2 repeats each), plus the clean-label CV accuracy. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import logging
import warnings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--encoder", required=True)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--l2", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
    p.add_argument("--filter-by", nargs="+", default=["prune_by_noise_rate", "both", "confident_learning"])
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("lightning"):
            logging.getLogger(name).setLevel(logging.ERROR)
    from dataclasses import replace

    from audit import evaluate, heads
    from audit.folds import stratified_folds
    from audit.options import RunOptions
    from audit.pipeline import embed_dataset

    opts = RunOptions(data=args.data, encoder=args.encoder, out="/tmp/audit-tune", cache_dir=args.cache_dir,
                      accelerator="cpu", progress=False).resolve()
    data = embed_dataset(opts)
    n_classes = len(data.classes)
    print("| l2 | filter_by | CV acc (clean) | F1 @5% | AP @5% | F1 @10% | AP @10% |\n|---|---|---|---|---|---|---|")
    for l2 in args.l2:
        folds = stratified_folds(data.labels, 5, 0)
        acc = (heads.out_of_fold_probs(data.emb, data.labels, folds, n_classes, l2=l2).argmax(1) == data.labels).mean()
        for filter_by in args.filter_by:
            recs = evaluate.evaluate(data.emb, data.labels, n_classes, replace(opts, l2=l2, filter_by=filter_by),
                                     noises=[0.05, 0.1], kind="uniform", repeats=args.repeats, baseline=None)
            cells = [f"{r['f1']['mean']:.3f} | {r['ap']['mean']:.3f}" for r in recs]
            print(f"| {l2:g} | {filter_by} | {acc:.4f} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
