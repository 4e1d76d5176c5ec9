"""Command line: `python -m audit`, the `audit` console script, and the Docker/SLURM entry points.

    audit [run] --data PATH --out DIR ...   find label issues (the default command)
    audit evaluate --noise 0.05 0.1 ...      flip labels on purpose and measure how many audit finds
    audit report OUT [--top N]               rebuild OUT/report.html from a run's outputs
    audit fetch --data ... --encoder ...     download and verify encoders and data (a cluster's login node)

A thin layer over the library (`audit.api`): argparse turns text into `RunOptions`, whose defaults
and rules live in options.py. The only module that exits: a user's mistake is one line on stderr
and exit status 2. Heavy imports (torch, SpeechBrain, Lightning) wait until after argument parsing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path

from audit import options as o
from audit.arg_types import (any_int, devices_arg, fold_repeats_arg, int_at_least, l2_arg, pca_arg,
                              pca_or_auto, positive_float)
from audit.errors import UserError

COMMANDS = ("commands: run (the default), evaluate, report, fetch -- `audit evaluate --help`, `audit report --help`, "
            "`audit fetch --help` (downloads for compute nodes without internet)")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The options shared by `audit run` and `audit evaluate`; defaults come from options.py."""
    d = p.add_argument_group("data")
    d.add_argument("--data",
                   help="a folder of audio (label in the file name, or one sub-folder per class); a CSV, Parquet or "
                        "JSON-lines manifest with columns path,label (NeMo's audio_filepath too; optional offset and "
                        "duration in seconds make a row a segment; extra columns are kept); a Hugging Face dataset "
                        "(hf:NAME[:CONFIG][:SPLIT], or a save_to_disk folder); or 'fsdd' to download the Free "
                        "Spoken Digit Dataset v1.0.9 (default: %(default)s)")
    d.add_argument("--multi-label", action="store_true",
                   help="each label cell holds a set of tags separated by ';' (dog;bark;speech; empty = no tags): "
                        "one-vs-rest heads, clips ranked by their worst tag (each against its tag's other clips), and "
                        "the missing and extra tags per clip")
    d.add_argument("--label-column", metavar="NAME",
                   help="for a Hugging Face dataset: the label column (default: its ClassLabel column)")
    d.add_argument("--embeddings", metavar="FILE",
                   help="skip the encoder: a .npy (N, D) with one row per manifest row, or a .parquet with path and "
                        "an embedding column (e.g. a run's OUT/embeddings.parquet); audio need not exist")
    d.add_argument("--label-pattern", metavar="REGEX",
                   help="for a folder of files: a regex with a named group 'label', searched in each file name "
                        "(default: the text before the first '_', as in 7_jackson_32.wav)")
    e = p.add_argument_group("embeddings")
    one_or_several = e.add_mutually_exclusive_group()
    one_or_several.add_argument(
        "--encoder",
        help="a Hugging Face id or a local folder: a SpeechBrain EncoderClassifier (x-vector, ECAPA: speech, "
             "speakers), a transformers audio model (wav2vec2, HuBERT, WavLM, Whisper's encoder, AST; needs "
             "pip install -e '.[hf]'), an EfficientAT AudioSet CNN for sound events, music and other non-speech "
             "audio (efficientat:mn04_as ... efficientat:mn40_as, or a release .pt file), or 'auto': each "
             "--candidates encoder is tried on a sample of your clips and the best cross-validated log-loss "
             "wins (README: which encoder for which data); given twice, the last one counts "
             "(default: %(default)s, x-vectors)")
    one_or_several.add_argument(
        "--encoders", nargs="+", metavar="ENCODER",
        help="several encoders instead of one: each embeds every clip (with its own cache) and their features "
             "are concatenated; each at most once")
    e.add_argument("--candidates", nargs="+", metavar="ENCODER",
                   help="with --encoder auto: the encoders compared on a sample of up to 1,000 clips (default: "
                        + " ".join(o.AUTO_CANDIDATES) + ")")
    e.add_argument("--features", choices=o.FEATURES,
                   help="which representation of the frozen encoder is pooled: its final (speaker) embedding, "
                        "'frames' = mean and std of the frame features that feed its statistics pooling (they "
                        "still carry what is said), or both; EfficientAT: its pooled AudioSet feature, or mean and "
                        "std over time of its last feature map (default: frames for SpeechBrain, embedding for "
                        "EfficientAT; a transformers model uses --layer)")
    e.add_argument("--frames-dim", type=pca_arg, metavar="P",
                   help="SpeechBrain, --features frames: the pooled frame statistics are projected to P dims by a fixed random "
                        "orthonormal projection before the cache (6x less cache and memory for ECAPA at 1,024, for a "
                        "measured AP cost of ~0.005 on FSDD); 0: keep them whole (default: 0)")
    e.add_argument("--layer",
                   help="a transformers encoder's hidden state to mean-pool over each clip's valid frames: last, "
                        "mean (the average of every layer's), or an index (0 = the input embeddings) (default: last)")
    e.add_argument("--accelerator", choices=o.ACCELERATORS,
                   help="as in Lightning; auto takes a GPU if there is one (default: %(default)s)")
    e.add_argument("--devices", type=devices_arg,
                   help="devices per node, as in Lightning; more than one runs the embedding stage as DDP "
                        "(default: %(default)s)")
    e.add_argument("--num-nodes", type=int_at_least(1), help="nodes, as in Lightning (default: %(default)s)")
    e.add_argument("--strategy", help="Lightning strategy, e.g. ddp (default: %(default)s)")
    e.add_argument("--precision", choices=o.PRECISIONS,
                   help="encoder precision; part of the cache key (default: %(default)s)")
    e.add_argument("--batch-seconds", type=positive_float, metavar="S",
                   help="padded audio seconds per batch (default: "
                        f"{o.DEFAULT_BATCH_SECONDS['cpu']:g} on CPU, {o.DEFAULT_BATCH_SECONDS['gpu']:g} on GPU)")
    e.add_argument("--window-seconds", type=positive_float, metavar="S",
                   help="clips longer than this are embedded window by window (read block by block) and their "
                        "windows' embeddings averaged; shorter clips are one window (default: %(default)s)")
    e.add_argument("--hop-seconds", type=positive_float, metavar="S",
                   help="start of one window to the next (default: %(default)s: no overlap)")
    e.add_argument("--num-workers", type=int_at_least(0), metavar="N",
                   help=f"DataLoader processes decoding audio (default: cores - 1, at most {o.MAX_WORKERS})")
    e.add_argument("--cache-dir", metavar="DIR",
                   help="embedding cache, reused across runs (default: OUT/cache)")
    e.add_argument("--shard-clips", type=int_at_least(1), metavar="N",
                   help="clips per cache shard: at most this much work is redone after a kill (default: %(default)s)")
    h = p.add_argument_group("heads and ranking")
    h.add_argument("--folds", type=int_at_least(o.MIN_FOLDS),
                   help="cross-validation folds; every class needs at least this many clips (default: %(default)s)")
    h.add_argument("--fold-repeats", type=fold_repeats_arg, metavar="N",
                   help="repeated cross-validation: average the out-of-fold probabilities over N fold splits (each "
                        "split's heads never see the clips they score), or 'auto': 3 up to 100,000 clips of class "
                        "labels, 1 above and for tag sets. Steadier rankings where the heads are weak (emotional "
                        "speech: AP 0.74 -> 0.80; tag sets: +0.002-0.018), at N times the heads' cost (tag sets' "
                        "heads: 27-65 s a split on 1,500 clips on a CPU) (default: %(default)s)")
    h.add_argument("--l2", type=l2_arg,
                   help="L2 penalty of the linear heads on standardized features, or 'auto': chosen per fold "
                        "by inner cross-validation on that fold's training clips (default: %(default)s)")
    h.add_argument("--pca-dim", type=pca_or_auto, metavar="P",
                   help="features wider than 1,024 dims (the pooled frame statistics) are reduced to P dims per "
                        "fold by a PCA fitted on that fold's training clips; 0: never; auto (the default): "
                        f"{o.DEFAULT_PCA_DIM}, or {o.MULTILABEL_PCA_DIM} with --multi-label")
    h.add_argument("--no-step-heads", dest="step_heads", action="store_false",
                   help="with --multi-label: skip the step heads (multiple-instance, over each clip's 0.1 s steps) "
                        "and the steps in the cache (up to 128 KiB a clip); the clip-statistics heads alone, "
                        "measured lower on every tag set (bench/RESULTS.md)")
    h.add_argument("--seed", type=any_int, help="seeds folds and training (default: %(default)s)")
    h.add_argument("--rank-by", choices=o.RANK_BY,
                   help="cleanlab's label-quality score that orders the issues (default: %(default)s)")
    h.add_argument("--filter-by", choices=o.FILTER_BY,
                   help=f"which clips are flagged: '{o.ESTIMATE}' flags the top of the ranking, as many clips as "
                        "the estimated number of wrong labels (printed with its range; tag sets: the size with "
                        "the best expected F1 at that estimate, within its range); any other value is "
                        f"cleanlab's find_label_issues rule of that name (default: {o.DEFAULT_FILTER_BY})")
    h.add_argument("--calibration", choices=o.CALIBRATIONS,
                   help="calibration of the out-of-fold probabilities, fitted per fold on inner folds of that "
                        "fold's training clips: one temperature (one per tag for tag sets), a scale and bias per "
                        "class (vector), or none; measured not to change the estimate (bench/RESULTS.md) "
                        "(default: %(default)s)")
    out = p.add_argument_group("output")
    out.add_argument("--top", type=int_at_least(0), default=10, help="issues to print at the end (default: %(default)s)")
    out.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars (e.g. in batch logs)")
    # Every RunOptions field's default, written once there (argparse's help shows it as %(default)s).
    p.set_defaults(**{f.name: f.default for f in dataclasses.fields(o.RunOptions) if f.name in _dests(p)})


def _dests(p: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in p._actions}


# RunOptions fields no argparse option sets by its own name: the CLI derives them here (options_from),
# or only the Python API offers them (none today: a new field must be one of the three).
CLI_DERIVED = ("out", "encoder")  # out: runs/<data> by default; encoder: --encoder or --encoders
API_ONLY = ()


def options_from(args: argparse.Namespace, default_out: str) -> o.RunOptions:
    """RunOptions from parsed arguments: each field from the option of its name (see CLI_DERIVED)."""
    same = {f.name: getattr(args, f.name) for f in dataclasses.fields(o.RunOptions)
            if f.name not in CLI_DERIVED + API_ONLY}
    return o.RunOptions(**same, out=args.out or default_out, encoder=tuple(args.encoders or ()) or args.encoder)


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="audit",
        description="Find label errors in an audio classification dataset: embed every clip with a frozen "
                    "SpeechBrain speaker encoder, train cross-validated linear heads with Lightning, and rank "
                    "the clips whose given label the out-of-fold probabilities disagree with (cleanlab).\n\n"
                    + COMMANDS,
        epilog="examples:\n  audit --data fsdd --out runs/fsdd\n"
               "  audit --data clips/ --label-pattern '^(?P<label>\\w+)-' --out runs/mine --devices 1\n"
               "  audit --data manifest.csv --encoder speechbrain/spkrec-ecapa-voxceleb --out runs/ecapa\n"
               "  audit evaluate --data fsdd --noise 0.05 --baseline reference\n"
               "  audit report runs/fsdd",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: runs/<name of --data>); refused if it holds anything else")
    p.add_argument("--report-top", type=int_at_least(0), default=o.DEFAULT_REPORT_TOP, metavar="N",
                   help="issues shown with audio, spectrogram and waveform in report.html (default: %(default)s)")
    p.add_argument("--relabel-out", default=None, metavar="FILE",
                   help="also write a manifest CSV with the suggested label applied to each flagged clip "
                        "(columns path,label,original_label,relabelled,...); your data stays untouched")
    return p


def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audit report", description="Rebuild OUT/report.html from a run's output folder.")
    p.add_argument("out", metavar="OUT", help="an audit output folder")
    p.add_argument("--top", type=int_at_least(0), default=o.DEFAULT_REPORT_TOP,
                   help="issues shown with media (default: %(default)s)")
    return p


def fetch_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="audit fetch",
        description="Download and verify every encoder (--encoder, --encoders, or auto's --candidates) and the "
                    "dataset (fsdd, hf:NAME) a run needs, on a machine with internet (a cluster's login node); "
                    "then the run itself works with no network (HF_HUB_OFFLINE=1). Takes the run's own arguments.",
        epilog="example:\n  audit fetch --data fsdd --encoder auto --out runs/fsdd      # on the login node\n"
               "  HF_HUB_OFFLINE=1 sbatch slurm/audit.sh ...                     # then on the cluster",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="the run's output folder, if it will have one (hf: datasets keep their audio in its cache)")
    for flag in ("--report-top", "--relabel-out"):  # the run's own arguments pass through unused
        p.add_argument(flag, help=argparse.SUPPRESS)
    return p


def cmd_fetch(argv: list[str]) -> int:
    args = fetch_parser().parse_args(argv)
    opts = options_from(args, default_out=str(Path("runs") / _data_name(args.data)))
    _quiet_libraries()
    from audit.fetch import fetch

    fetched = fetch(opts.resolve())
    rerun = " ".join(["python -m audit"] + [shlex.quote(a) for a in argv])
    print(f"fetched and verified: {', '.join(fetched) or 'nothing to fetch'}; on a node without internet run:\n"
          f"  HF_HUB_OFFLINE=1 {rerun}")
    return 0


def cmd_report(argv: list[str]) -> int:
    args = report_parser().parse_args(argv)
    _quiet_libraries()
    from audit.report import build_report

    print(f"written: {build_report(Path(args.out), top=args.top)}")
    return 0


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="audit evaluate",
        description="Measure audit on known label noise: flip a fraction of the (trusted) labels, run the heads and "
                    "the ranking, and score the flagged clips (precision, recall, F1) and the quality ranking "
                    "(average precision, AUROC, precision at k = number of flips). Embeddings are computed once.",
        epilog="example:\n  audit evaluate --data fsdd --noise 0.05 0.1 --repeats 3 --baseline reference --out runs/eval",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    n = p.add_argument_group("evaluation")
    n.add_argument("--noise", type=positive_float, nargs="+", default=[0.05, 0.1], metavar="P",
                   help=f"fraction(s) of labels to flip, each in (0, {o.MAX_NOISE}] (default: 0.05 0.1)")
    n.add_argument("--noise-kind", choices=o.NOISE_KINDS, default=o.NOISE_KINDS[0],
                   help="uniform: any other class; confusable: toward the classes the model already confuses. "
                        "Tag sets (--multi-label: one tag dropped or swapped per corrupted clip): any tag, or the "
                        "tags the model doubts on that clip (dropped) or half hears (added) (default: %(default)s)")
    n.add_argument("--repeats", type=int_at_least(1), default=3,
                   help="flips per noise level, with different seeds (default: 3)")
    n.add_argument("--baseline", choices=("reference", "none"), default="none",
                   help="reference: also score sklearn LogisticRegression(C=0.01) + 5-fold cross_val_predict + "
                        "cleanlab self-confidence on the same flips (default: %(default)s)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder for eval.json (default: runs/eval-<data>)")
    return p


def _data_name(data: str) -> str:
    if data.startswith("hf:"):  # every part of hf:NAME:CONFIG:SPLIT: splits get folders of their own
        return data[3:].replace("/", "--").replace(":", "-")
    return Path(data.rstrip("/")).stem or "audit"


def cmd_run(argv: list[str]) -> int:
    args = run_parser().parse_args(argv)
    opts = options_from(args, default_out=str(Path("runs") / _data_name(args.data)))
    _quiet_libraries()
    from audit import api, outputs, summary

    result = api.audit(opts, report_top=args.report_top, started=_started)
    if result is None:  # another rank of the embedding stage: rank 0 writes the outputs
        return 0
    summary.print_summary(result.summary, result.scores, Path(opts.out), top=args.top)
    if args.relabel_out:
        n = outputs.write_relabelled_manifest(result.run, Path(args.relabel_out))
        print(f"relabelled manifest: {args.relabel_out} ({n} labels changed; train on it after reviewing report.html)")
    return 0


def cmd_evaluate(argv: list[str]) -> int:
    args = evaluate_parser().parse_args(argv)
    o.check_noise(args.noise, args.repeats)
    opts = options_from(args, default_out=str(Path("runs") / f"eval-{_data_name(args.data)}")).resolve()
    out = Path(opts.out)
    from audit import outputs

    outputs.prepare_out(out)
    _quiet_libraries()
    from audit import evaluate

    done = evaluate.evaluate_run(opts, noises=args.noise, kind=args.noise_kind, repeats=args.repeats,
                                 baseline=args.baseline)
    if done is None:  # another rank of a multi-process embedding stage
        return 0
    data, records = done
    noise = f"{args.noise_kind} tag" if args.multi_label else args.noise_kind
    print(f"\naudit evaluate: {len(data.clips)} clips, {len(data.classes)} classes, {noise} noise, "
          f"{args.repeats} repeat(s); mean ± std\n")
    print(evaluate.format_table(records))
    print(f"\nwritten: {out / 'eval.json'}")
    return 0


_started = time.perf_counter()  # summary.json's seconds count from here; main() from the command line moves it to the process's start


def _process_age() -> float:
    """Seconds since this process started (the interpreter's start and the imports before main); 0 if unknown."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()  # from field 3 (state) on
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22: start time, in ticks
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


def main(argv: list[str] | None = None) -> int:
    global _started
    if argv is None:  # the real command line: the clock starts with the process (interpreter, imports)
        _started = time.perf_counter() - _process_age()
        argv = sys.argv[1:]
    else:  # from Python (tests, a notebook calling it again): from this call
        _started = time.perf_counter()
    commands = {"run": cmd_run, "evaluate": cmd_evaluate, "report": cmd_report, "fetch": cmd_fetch}
    command = commands.get(argv[0]) if argv else None
    try:
        return command(argv[1:]) if command else cmd_run(argv)
    except UserError as e:
        print(f"audit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("audit: interrupted; rerun the same command to resume from the embedding cache", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    """Lightning's tips and SpeechBrain's notices drown the progress bar; real warnings still show."""
    import logging
    import warnings

    import lightning  # noqa: F401  (its loggers must exist before their levels are set)

    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("lightning", "speechbrain")):
            logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*custom batch sampler.*", ".*transfer_batch_to_device.*", ".*LeafSpec.*",
                    ".*does not have many workers.*", ".*`srun` command is available.*", ".*torchaudio.*deprecated.*",
                    ".*_register_pytree_node.*"):
        warnings.filterwarnings("ignore", message=pattern)
