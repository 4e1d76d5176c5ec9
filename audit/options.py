"""Every option of a run: its default, its rule, and how it is resolved -- written once, here.

The CLI's argparse types and the Python API both end in `RunOptions`, whose constructor checks
every rule (a `UserError` with one line naming the option); `resolve()` then fills what depends on
the machine (accelerator, batch size, worker count) exactly once. Nothing downstream re-checks or
re-defaults an option.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

from audit.errors import UserError

DEFAULT_ENCODER = "speechbrain/spkrec-xvect-voxceleb"  # 512-d x-vectors; the users' default
AUTO = "auto"  # --encoder auto: chosen on a sample of the user's data (choose.py)
# What `auto` compares unless --candidates names others: the speech default and a general-audio (AudioSet)
# CNN; mn04 is the EfficientAT model whose release hash is pinned and measured here (bench/RESULTS.md).
AUTO_CANDIDATES = (DEFAULT_ENCODER, "efficientat:mn04_as")
LAYERS = ("last", "mean")  # transformers encoders' --layer names; or an int: a hidden-state index
ACCELERATORS = ("auto", "cpu", "gpu")
FEATURES = ("embedding", "frames", "frames+embedding")  # which representation is pooled: audit/encoders/ (SpeechBrain, EfficientAT)
DEFAULT_FEATURES = "frames"  # measured best on every evaluation set, speakers included (bench/RESULTS.md)
# Pooled frame stats are kept whole by default: a fixed random projection to 1,024 or 2,048 dims cost
# AP 0.998 -> 0.993/0.994 and F1 0.957 -> 0.94 on FSDD digits (bench/RESULTS.md). At a million clips the
# whole 6,144-d ECAPA stats are 24 GB: pass --frames-dim 1024 there.
DEFAULT_FRAMES_DIM = None
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
# Padded audio seconds per batch: on CPU small batches stay in cache (best of 4/8/16 s on FSDD,
# bench/RESULTS.md); a GPU wants them wide.
DEFAULT_BATCH_SECONDS = {"cpu": 8.0, "gpu": 256.0}
MAX_WORKERS = 8  # decoding processes: beyond 8 the encoder, not decoding, is the bottleneck on one GPU
SHARD_CLIPS = 1024  # clips per cache shard: at most this much work is redone after a kill
MIN_FOLDS = 2
DEFAULT_FOLDS = 5
# Repeated cross-validation: the out-of-fold probabilities averaged over this many fold splits, each clip
# scored by heads that never saw it on every split. 3 against 1 on 10 sets x 3 noise settings x 6 repeats
# (bench/RESULTS.md): AP 0.959 -> 0.967 on average (never lower), emotional speech 0.74 -> 0.80, within issue
# 19's bar on 26 of 30 cells against 25; the heads cost 3x (0.46 s per 1,000 clips per split at 6,144-d), so
# "auto" repeats only up to FOLD_REPEATS_MAX_CLIPS clips of class labels and splits once above. Tag sets: 3
# splits raised AP and F1 on both tag sets (6 of 6 cells) but their heads (clip and step) took 79-203 s a fit
# on 1,500 clips against 27-65 s, so "auto" splits them once (`--fold-repeats 3` where a user can wait).
FOLD_REPEATS_AUTO = 3
FOLD_REPEATS_MAX_CLIPS = 100_000
DEFAULT_L2 = 1e-2  # on standardized embeddings; chosen on FSDD by CV accuracy (bench/RESULTS.md)
DEFAULT_PCA_DIM = 128
# Tag sets: one clip holds 2-3 sources, and K sigmoid heads read more of the frame statistics. On both
# multi-label sets (FSDD digits and espeak-ng words, bench/RESULTS.md) 256 dims beat 128 by 0.04-0.15 F1
# and 0.05-0.15 AP; 384 was no better.
MULTILABEL_PCA_DIM = 256
PCA_FROM_DIM = 1024  # only wider features are reduced: final embeddings (192-512) lost accuracy to a PCA
DEFAULT_WINDOW_SECONDS = 10.0  # AudioSet's clip length; x-vector/ECAPA saw 2-4 s crops in training
DEFAULT_HOP_SECONDS = 10.0  # no overlap: cost grows with the audio's length, not faster
RANK_BY = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
DEFAULT_RANK_BY = "self_confidence"
ESTIMATE = "estimate"  # flag the top of the ranking, as many clips as issue_count.py estimates (label_issues.py)
FILTER_BY = (ESTIMATE, "prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
             "predicted_neq_given", "low_normalized_margin", "low_self_confidence")
# estimate: cleanlab's prune_by_class flags were within 0.03 F1 of the best cut of the same ranking and 15% of
# the true count on 4 of 30 set x noise cells (10 sets, 3 repeats); the top of the ranking at
# issue_count.py's estimate on 25 (6 repeats; 17 with the estimate before 2026-12-03), with an equal or higher
# F1 on every cell (bench/cut_study.py, bench/RESULTS.md).
DEFAULT_FILTER_BY = ESTIMATE
# Tag sets get it too: with the ranking of label_issues.tag_margins and the cut at the best expected F1
# (label_issues.cut; 9 repeats), F1 0.923-0.928 on the digit tag set and 0.894-0.922 on the spoken-word tag
# set against confident_learning's 0.85-0.89, counts 1.05-1.10x of the corrupted clips against 0.77-0.83x
# (bench/RESULTS.md); a flagged clip's
# changed tags come from confident_learning's per-tag issues, which had the best F1 on both tag sets before
# (+0.03-0.06 over prune_by_class).
TAG_ISSUES_FILTER_BY = "confident_learning"  # which tags of a flagged clip look missing or wrong (label_issues.py)
CALIBRATIONS = ("none", "temperature", "vector")  # calibration.py
# none: a temperature fitted per fold on inner folds changed neither the estimated count nor the cut's F1
# beyond the spread over repeats on any set, and costs 3 more heads per fold; vector scaling raised the
# held-out log-loss (bench/cut_study.py, bench/RESULTS.md). Both stay available.
DEFAULT_CALIBRATION = "none"
MAX_NOISE = 0.5  # beyond it the flipped labels are the majority: there is nothing left to find
NOISE_KINDS = ("uniform", "confusable")  # `audit evaluate --noise-kind` (evaluate.py); the first is the default
DEFAULT_REPORT_TOP = 50  # issues shown with audio, spectrogram and waveform in report.html


@dataclass(frozen=True)
class RunOptions:
    """What a user asks for. `None` means "pick for this machine" (see `resolve`)."""

    data: object = "fsdd"  # a path, hf:NAME, 'fsdd', or (API) a DataFrame or datasets.Dataset
    out: str | None = None  # None: the API writes nothing; the CLI picks runs/<name of data>
    label_pattern: str | None = None  # None: manifest.DEFAULT_LABEL_PATTERN
    label_column: str | None = None  # Hugging Face datasets: None finds the ClassLabel column
    embeddings: str | None = None  # precomputed embeddings (precomputed.py): no encoder runs
    multi_label: bool = False  # label cells hold tag sets separated by ';' (labels.py)
    step_heads: bool = True  # tag sets: cache each clip's steps and add the step heads (instance_heads.py)
    encoder: str | tuple = DEFAULT_ENCODER  # a tuple of several (--encoders): each embeds every clip, features concatenated
    features: str | None = None  # None: DEFAULT_FEATURES for SpeechBrain encoders (transformers: --layer)
    frames_dim: int | None = DEFAULT_FRAMES_DIM  # --features frames: fixed random projection to this width
    layer: str | None = None  # transformers encoders: last (None), mean (of all layers) or a hidden-state index
    candidates: tuple | None = None  # --encoder auto: the encoders compared (None: AUTO_CANDIDATES)
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    batch_seconds: float | None = None
    window_seconds: float = DEFAULT_WINDOW_SECONDS  # longer clips are embedded window by window (windows.py)
    hop_seconds: float = DEFAULT_HOP_SECONDS
    num_workers: int | None = None
    cache_dir: str | None = None  # None: OUT/cache, or cache_root()/embeddings without an out
    shard_clips: int = SHARD_CLIPS
    folds: int = DEFAULT_FOLDS
    fold_repeats: int | str = AUTO  # fold splits the probabilities are averaged over; auto: fold_repeats_for
    l2: float | str = DEFAULT_L2  # or "auto": chosen per fold by inner cross-validation (heads.py)
    pca_dim: int | None | str = "auto"  # wider features are reduced per fold (heads.py); None: never; auto: by task
    seed: int = 0
    rank_by: str = DEFAULT_RANK_BY
    filter_by: str | None = None  # None: DEFAULT_FILTER_BY (task_defaults)
    calibration: str = DEFAULT_CALIBRATION  # of the out-of-fold probabilities, per fold (calibration.py)
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.encoder, (list, tuple)):  # frozen and hashable: the API may pass a list
            encoders = tuple(self.encoder)
            object.__setattr__(self, "encoder", encoders[0] if len(encoders) == 1 else encoders)
        if not self.encoder or not all(isinstance(e, str) and e for e in self.encoders):
            raise UserError(f"--encoder {self.encoder!r}: a Hugging Face id or a local folder (one or more)")
        twice = sorted({e for e in self.encoders if self.encoders.count(e) > 1})
        if twice:
            raise UserError(f"--encoders: {', '.join(twice)} given twice; name each encoder once")
        if isinstance(self.candidates, (str, list, tuple)):  # one name, or several
            object.__setattr__(self, "candidates", (self.candidates,) if isinstance(self.candidates, str)
                               else tuple(self.candidates))
        if self.candidates is not None:
            if self.encoder != AUTO:
                raise UserError("--candidates: the encoders that --encoder auto compares; add --encoder auto")
            if not self.candidates or not all(isinstance(e, str) and e and e != AUTO for e in self.candidates):
                raise UserError(f"--candidates {self.candidates!r}: one or more encoders (ids, folders or "
                                "efficientat:NAME), not auto")
            if len(set(self.candidates)) < len(self.candidates):
                raise UserError("--candidates: an encoder given twice; name each once")
        if AUTO in self.encoders and self.encoder != AUTO:
            raise UserError("--encoders: auto chooses one encoder; use --encoder auto --candidates A B instead")
        if self.encoder == AUTO:
            given = [f"--{name.replace('_', '-')}" for name in ("features", "frames_dim", "layer")
                     if getattr(self, name) is not None]
            if given:
                raise UserError(f"{', '.join(given)}: with --encoder auto each candidate uses its family's own "
                                "representation; name the encoder to choose one")
        _choice("accelerator", self.accelerator, ACCELERATORS)
        _choice("precision", self.precision, PRECISIONS)
        if self.features is not None:
            _choice("features", self.features, FEATURES)
        if self.layer is not None and not (self.layer in LAYERS or str(self.layer).lstrip("-").isdigit()):
            raise UserError(f"--layer {self.layer}: {', '.join(LAYERS)}, or a hidden-state index (an integer)")
        if not self.step_heads and not self.multi_label:
            raise UserError("--no-step-heads: the step heads are for tag sets; add --multi-label or leave it out")
        _choice("rank-by", self.rank_by, RANK_BY)
        if self.filter_by is not None:
            _choice("filter-by", self.filter_by, FILTER_BY)
        _choice("calibration", self.calibration, CALIBRATIONS)
        if self.calibration != "none" and self.multi_label and self.step_heads and not self.embeddings:
            raise UserError(f"--calibration {self.calibration}: tag sets average the step heads' logits with the "
                            "clip-statistics heads', and only the latter can be calibrated; add --no-step-heads")
        if self.devices != "auto" and not (isinstance(self.devices, int) and self.devices >= 1):
            raise UserError(f"--devices {self.devices}: a positive number of devices or 'auto'")
        _at_least("num-nodes", self.num_nodes, 1)
        _at_least("shard-clips", self.shard_clips, 1)
        _at_least("folds", self.folds, MIN_FOLDS)
        if self.fold_repeats != AUTO:
            _at_least("fold-repeats", self.fold_repeats, 1)
        if self.num_workers is not None:
            _at_least("num-workers", self.num_workers, 0)
        if self.pca_dim not in (None, "auto"):
            _at_least("pca-dim", self.pca_dim, 1)
        if self.frames_dim is not None:
            _at_least("frames-dim", self.frames_dim, 1)
        if self.l2 != "auto" and not (_is_number(self.l2) and self.l2 > 0):
            raise UserError(f"--l2 {self.l2}: a number > 0 or 'auto'")
        for name, value in (("batch-seconds", self.batch_seconds), ("window-seconds", self.window_seconds),
                            ("hop-seconds", self.hop_seconds)):
            if value is not None and not (_is_number(value) and value > 0):
                raise UserError(f"--{name} {value!r}: must be a number > 0")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise UserError(f"--seed {self.seed!r}: need a whole number")

    @property
    def encoders(self) -> tuple:
        return (self.encoder,) if isinstance(self.encoder, str) else tuple(self.encoder)

    def as_dict(self) -> dict:
        """For summary.json: every option, the data described when it is an object (DataFrame, Dataset)."""
        d = asdict(self) if isinstance(self.data, str) else {**asdict(replace(self, data="")), "data": describe(self.data)}
        return d

    def resolve(self) -> "RunOptions":
        """The same options with every machine-dependent default filled in (accelerator: cpu|gpu)."""
        from audit.devices import resolve_accelerator

        accelerator = resolve_accelerator(self.accelerator)
        pca_dim, filter_by = task_defaults(self.multi_label, self.pca_dim, self.filter_by)
        return replace(
            self, accelerator=accelerator, pca_dim=pca_dim, filter_by=filter_by,
            batch_seconds=self.batch_seconds or DEFAULT_BATCH_SECONDS[accelerator],
            num_workers=default_workers() if self.num_workers is None else self.num_workers,
            cache_dir=self.cache_dir or default_cache_dir(self.out))


def task_defaults(multi_label: bool, pca_dim="auto", filter_by: str | None = None) -> tuple[int | None, str]:
    """(pca_dim, filter_by) with "auto" / None filled in for single labels or tag sets."""
    if pca_dim == "auto":
        pca_dim = MULTILABEL_PCA_DIM if multi_label else DEFAULT_PCA_DIM
    return pca_dim, filter_by or DEFAULT_FILTER_BY


def describe(data) -> str:
    if isinstance(data, str):
        return data
    return f"<{type(data).__name__} of {len(data)} rows>"


def default_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores - 1))  # leave a core to the encoder's own threads


def cache_root() -> str:
    """Where downloads, decoded datasets and (without --out) embeddings go: $AUDIT_CACHE, else ~/.cache/audit."""
    return os.environ.get("AUDIT_CACHE") or os.path.expanduser("~/.cache/audit")


def default_cache_dir(out: str | None) -> str:
    if out:
        return os.path.join(out, "cache")
    return os.path.join(cache_root(), "embeddings")


def check_noise(noise: list[float], repeats: int) -> None:
    """The rules of `audit evaluate`'s own options."""
    for p in noise:
        if not 0 < p <= MAX_NOISE:
            raise UserError(f"--noise {p}: must be in (0, {MAX_NOISE}] (beyond it the flipped labels are the majority)")
    _at_least("repeats", repeats, 1)


def _choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise UserError(f"--{name} {value!r}: choose one of {', '.join(choices)}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _at_least(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise UserError(f"--{name} {value}: need a whole number >= {low}")


def fold_repeats_for(option: int | str, n_clips: int, multi_label: bool = False) -> int:
    """The fold splits a run averages over: `option`, or for auto FOLD_REPEATS_AUTO up to
    FOLD_REPEATS_MAX_CLIPS clips of class labels and 1 above (the heads' cost grows with N x splits); tag sets
    1 (three splits ranked better but cost their step heads 3x: see FOLD_REPEATS_AUTO)."""
    if option != AUTO:
        return int(option)
    return FOLD_REPEATS_AUTO if n_clips <= FOLD_REPEATS_MAX_CLIPS and not multi_label else 1
