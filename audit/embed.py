"""The embedding stage: clips -> (N, D) embeddings through a frozen encoder, cached in shards.

Notation: N clips, B clips in a batch, T samples, D embedding dim. Runs as a Lightning
`Trainer.predict`, so the same code serves CPU, one GPU, and many GPUs or nodes. Rank 0 alone
plans (which clips the cache lacks, the length-bucketed batches) and broadcasts the plan, so ranks
that see the cache change under them (a second job, a shard landing mid-start) still agree; every
rank embeds every W-th unit of the plan (a batch of short clips, or all windows of one long clip:
windows.py) and writes its own shards; rank 0 then reads the cache.
A rerun, or a run killed half-way, computes only what is missing.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from audit import encoders
from audit.audio import SAMPLE_RATE
from audit.batching import Batch, ClipDataset, FixedBatches, collate, probe_all
from audit.cache import CacheContents, ShardStore, cache_folder, clip_keys
from audit.devices import check_launch
from audit.errors import UserError, one_line
from audit.options import RunOptions
from audit.steps import STEP_DIM, Steps, coarsen
from audit.windows import Windows, cut, units

NOT_EMBEDDED = "not embedded this run (a transient error on another rank?); retried on the next run"


@dataclass(frozen=True)
class Plan:
    """What the embedding stage will do, made once on rank 0 and shared with every rank."""

    keys: list  # (N,) cache key of each clip
    failed: dict  # {row: reason} clips the header probe already ruled out
    windows: Windows  # every clip's windows (windows.py)
    todo: list  # [[[window id, ...] per batch] per unit]: the units holding a clip the cache lacks


@dataclass(frozen=True)
class CachedEmbeddings:
    emb: np.ndarray  # (N, D) float32; rows of failed clips are NaN
    meta: list  # (N,) {name: text} per clip: its file's sha1, its health ({} where unknown)
    failed: dict  # {row: reason}
    n_computed: int  # clips embedded in this run (the rest came from the cache)
    seconds: float
    is_rank_zero: bool = True  # other ranks only embed their share: their result holds no embeddings
    steps: Steps | None = None  # (N clips) multiple-instance steps, tag sets only (steps.py); failed clips: none
    load_seconds: float = 0.0  # of `seconds`: loading the encoder and its padding check


def make_plan(files: list[str], cached: CacheContents, opts: RunOptions, offsets=None, durations=None,
              steps: bool = False) -> Plan:
    """`steps`: the run needs each clip's steps too; a cached clip without them is embedded again."""
    keys = clip_keys(files, offsets, durations)
    seconds, failed = probe_all(files, offsets, durations)  # (N,)
    windows = cut(seconds, opts.window_seconds, opts.hop_seconds)
    done = np.array([(k in cached.emb and (not steps or k in cached.steps)) or k in cached.failed for k in keys],
                    dtype=bool)  # (N,)
    todo = [u for u in units(windows, opts.batch_seconds) if not done[windows.row[[w for b in u for w in b]]].all()]
    return Plan(keys=keys, failed=failed, windows=windows, todo=todo)


class EncoderModule(L.LightningModule):
    """The frozen encoder (any family: audit/encoders), loaded only where a rank has batches to embed."""

    def __init__(self, encoder: encoders.Encoder, savedir: Path, opts: RunOptions):
        super().__init__()
        self.source, self.savedir, self.opts = encoder, savedir, opts
        self.encoder = None
        self.steps = with_steps(opts, encoder)
        self.load_seconds = 0.0

    def configure_model(self):
        if self.encoder is None and self.trainer.datamodule.my_batches():
            start = time.perf_counter()
            # a folder per rank: SpeechBrain links its files into the savedir, and two ranks doing so at once
            # fail with "File exists"
            self.encoder = encoders.load(self.source, self.opts, self.savedir / f"rank{self.trainer.global_rank}")
            self.load_seconds = time.perf_counter() - start

    def transfer_batch_to_device(self, batch: Batch, device, dataloader_idx):
        return dataclasses.replace(batch, wavs=batch.wavs.to(device, non_blocking=True),
                                   lens=batch.lens.to(device, non_blocking=True))

    def predict_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | tuple:
        if len(batch.index) == 0:
            return torch.empty(0, 0)
        out, steps, counts = self.encoder.embed(batch.wavs, batch.lens, steps=self.steps)  # (B, D), (B, S, C), (B,)
        if self.steps:
            return out.float().cpu(), steps.half().cpu(), counts.cpu()
        return out.float().cpu()  # (B, D)


def with_steps(opts: RunOptions, encoder: encoders.Encoder) -> bool:
    """Whether this run stores multiple-instance steps: tag sets, with an encoder that has them (steps.py)."""
    return bool(opts.multi_label and opts.step_heads) and encoder.has_steps


class PlannedBatches(L.LightningDataModule):
    """Rank 0 makes the plan once the ranks are connected; unit i (windows.py) goes to rank i % W."""

    def __init__(self, files: list[str], store: ShardStore, opts: RunOptions, plan: Plan | None = None,
                 offsets=None, durations=None, steps: bool = False, rate: int = SAMPLE_RATE):
        super().__init__()
        self.files, self.store, self.opts, self.steps = files, store, opts, steps
        self.rate = rate  # Hz: the encoder's; clips are decoded to it
        self.offsets, self.durations = offsets, durations
        self.plan = plan

    def setup(self, stage: str):
        if self.plan is None:
            plan = None
            if self.trainer.is_global_zero:
                try:
                    plan = make_plan(self.files, self.store.load(), self.opts, self.offsets, self.durations,
                                     self.steps)
                except Exception as e:  # every rank must hear of it, or the others wait in broadcast forever
                    plan = e
            plan = self.trainer.strategy.broadcast(plan, src=0)
            if isinstance(plan, Exception):
                raise plan
            self.plan = plan

    def my_batches(self) -> list:
        """This rank's batches: every W-th unit of the plan (all windows of a long clip stay together)."""
        return [b for unit in self.plan.todo[self.trainer.global_rank :: self.trainer.world_size] for b in unit]

    def predict_dataloader(self):
        workers = self.opts.num_workers
        return DataLoader(ClipDataset(self.files, self.offsets, self.durations, self.plan.windows, self.rate),
                          batch_sampler=FixedBatches(self.my_batches()), collate_fn=collate, num_workers=workers,
                          pin_memory=self.opts.accelerator == "gpu", prefetch_factor=4 if workers else None)


class ShardWriter(BasePredictionWriter):
    """Buffers each rank's embeddings and writes a cache shard every `shard_clips` clips (whole batches)."""

    def __init__(self, store: ShardStore, shard_clips: int, progress: bool):
        super().__init__(write_interval="batch")
        self.store, self.shard_clips, self.progress = store, shard_clips, progress
        self.retry: list[tuple[int, str]] = []  # this rank's transient failures, never cached
        self._reset()

    def _reset(self):
        self.rows, self.embs, self.failed, self.meta, self.steps = [], [], [], {}, []

    def on_predict_start(self, trainer, pl_module):
        data = trainer.datamodule
        self.keys, self.rank, self.windows = data.plan.keys, trainer.global_rank, data.plan.windows
        self.left = self.windows.count(len(self.keys))  # (N,) windows of each clip still to come
        self.sums, self.weights, self.first_meta, self.dead = {}, {}, {}, set()
        self.step_parts = {}  # row -> [(window id, (S, C) float16)] until the clip's last window
        self.with_steps = pl_module.steps
        on = self.progress and trainer.global_rank == 0
        desc = "embedding" if trainer.world_size == 1 else f"embedding (rank 0 of {trainer.world_size})"
        total = len({int(self.windows.row[w]) for b in data.my_batches() for w in b})
        self.bar = tqdm(total=total, unit="clip", desc=desc, disable=not on, smoothing=0.1)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        """Pools each clip's windows as they arrive (weighted by length); a clip is done with its last window."""
        steps = None
        if isinstance(prediction, tuple):  # (B, D), (B, S, C), (B,)
            prediction, steps, counts = prediction
        emb = prediction.numpy()  # (B, D)
        for b, (row, window) in enumerate(zip(batch.index.tolist(), batch.windows)):
            if steps is not None:
                self.step_parts.setdefault(row, []).append((window, steps[b, :int(counts[b])].numpy()))
            weight = float(self.windows.length[window])
            self.sums[row] = self.sums.get(row, 0.0) + weight * emb[b].astype(np.float64)
            self.weights[row] = self.weights.get(row, 0.0) + weight
            meta = {name: values[b] for name, values in batch.meta.items() if values[b]}
            if meta:
                self.first_meta[row] = meta
            self._arrived(row)
        for row, reason in batch.failed + batch.retry:  # one failed window fails its clip
            if row not in self.dead:
                self.dead.add(row)
                (self.failed if (row, reason) in batch.failed else self.retry).append((row, reason))
                self.bar.update(1)
            self._arrived(row)
        if len(self.rows) + len(self.failed) >= self.shard_clips:
            self._flush()

    def _arrived(self, row: int) -> None:
        self.left[row] -= 1
        if self.left[row]:
            return  # more windows of this clip to come
        sums, weight, meta = self.sums.pop(row, None), self.weights.pop(row, None), self.first_meta.pop(row, {})
        parts = self.step_parts.pop(row, [])
        if row in self.dead:
            return
        self.rows.append(row)
        self.embs.append((sums / weight).astype(np.float32)[None])  # (1, D)
        if self.with_steps:  # the clip's windows in time order, at most MAX_STEPS steps
            self.steps.append(coarsen(np.concatenate([p for _, p in sorted(parts, key=lambda wp: wp[0])])))
        for name in set(self.meta) | set(meta):  # every list stays one entry per row
            self.meta.setdefault(name, [""] * (len(self.rows) - 1)).append(meta.get(name, ""))
        self.bar.update(1)

    def on_predict_end(self, trainer, pl_module):
        self._flush()
        self.bar.close()

    def _flush(self):
        if not self.rows and not self.failed:
            return
        emb = np.concatenate(self.embs) if self.embs else np.zeros((0, 0), np.float32)  # (n, D)
        self.meta = {k: v + [""] * (len(self.rows) - len(v)) for k, v in self.meta.items()}
        self.store.write([self.keys[r] for r in self.rows], emb,
                         [(self.keys[r], reason) for r, reason in self.failed], tag=f"rank{self.rank}",
                         meta=self.meta, steps=self.steps if self.with_steps else None)
        self._reset()


def store_for(opts: RunOptions, encoder: encoders.Encoder | None = None) -> tuple[ShardStore, encoders.Encoder]:
    """The shard store for these options, and the encoder (resolved from opts.encoder unless given)."""
    encoder = encoder or encoders.resolve(opts.encoder)
    settings = encoders.settings(encoder, opts)  # refuses an option the encoder's family does not take
    if encoder.family != "speechbrain":  # SpeechBrain's cache folders keep the names they always had
        settings = dict(family=encoder.family, rate=encoder.sample_rate, **settings)
    return ShardStore(cache_folder(Path(opts.cache_dir), encoder.name, encoder.identity, precision=opts.precision,
                                   window=opts.window_seconds, hop=opts.hop_seconds, **settings)), encoder


def embed(files: list[str], opts: RunOptions, offsets=None, durations=None,
          encoder: encoders.Encoder | None = None, every_rank: bool = False) -> CachedEmbeddings:
    """Embeddings (N, D) for `files`, from the cache where possible; unusable clips in `failed`.

    `opts` must be resolved (RunOptions.resolve): accelerator cpu|gpu, batch_seconds, num_workers, cache_dir.
    `encoder`: opts.encoder already resolved (audit.encoders.resolve), to spare a second look-up.
    `every_rank`: every rank reads the embeddings back from the cache (not only rank 0).
    """
    start = time.perf_counter()
    check_launch(opts.accelerator, opts.devices, opts.num_nodes)
    store, encoder = store_for(opts, encoder)
    writer = ShardWriter(store, opts.shard_clips, opts.progress)
    try:
        trainer = L.Trainer(
            accelerator=opts.accelerator, devices=opts.devices, num_nodes=opts.num_nodes,
            strategy=opts.strategy, precision=opts.precision, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
            callbacks=[writer])
    except (ValueError, RuntimeError, TypeError) as e:  # Lightning's MisconfigurationException is a ValueError
        raise UserError(f"cannot run on --accelerator {opts.accelerator} --devices {opts.devices} "
                        f"--num-nodes {opts.num_nodes} --strategy {opts.strategy}: {one_line(e, 1000)}") from None
    # One process can plan before starting anything, and skip the Trainer when the cache has it all;
    # several must plan inside predict, where rank 0's plan can be broadcast.
    steps = with_steps(opts, encoder)
    plan = make_plan(files, store.load(), opts, offsets, durations, steps) if trainer.world_size == 1 else None
    data = PlannedBatches(files, store, opts, plan=plan, offsets=offsets, durations=durations, steps=steps,
                          rate=encoder.sample_rate)
    load_seconds = 0.0
    if plan is None or plan.todo:
        # SpeechBrain's savedir reuses whatever files it finds there: one folder per encoder identity
        module = EncoderModule(encoder, Path(opts.cache_dir) / "encoders" / store.folder.name, opts)
        trainer.predict(module, datamodule=data,
                        return_predictions=False)
        trainer.strategy.barrier()  # every rank's shards are on disk before rank 0 reads the cache
        load_seconds = module.load_seconds
    plan = data.plan
    n_todo = len({int(plan.windows.row[w]) for unit in plan.todo for b in unit for w in b})
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero and not every_rank:
        return CachedEmbeddings(emb=np.zeros((0, 0), np.float32), meta=[], failed={}, n_computed=n_todo,
                                seconds=seconds, is_rank_zero=False, load_seconds=load_seconds)
    return _assemble(plan, store.load(), dict(writer.retry), n_todo, seconds, steps=steps, load_seconds=load_seconds)


def _assemble(plan: Plan, cached: CacheContents, retry: dict, n_todo: int, seconds: float,
              steps: bool = False, load_seconds: float = 0.0) -> CachedEmbeddings:
    dim = len(next(iter(cached.emb.values()))) if cached.emb else 0
    n = len(plan.keys)
    emb = np.full((n, dim), np.nan, dtype=np.float32)  # (N, D)
    meta = [{} for _ in range(n)]
    failed = dict(plan.failed)
    step_dim = next(iter(cached.steps.values())).shape[1] if cached.steps else STEP_DIM  # < STEP_DIM: few channels
    no_steps = np.zeros((0, step_dim), np.float16)
    clip_steps = [no_steps] * n
    for i, k in enumerate(plan.keys):
        if i in failed:
            continue
        if k in cached.emb and (not steps or k in cached.steps):
            emb[i] = cached.emb[k]
            meta[i] = cached.meta.get(k, {})
            clip_steps[i] = cached.steps.get(k, no_steps)
        else:
            failed[i] = cached.failed.get(k) or retry.get(i) or NOT_EMBEDDED
    return CachedEmbeddings(emb=emb, meta=meta, failed=dict(sorted(failed.items())), n_computed=n_todo,
                            seconds=seconds, load_seconds=load_seconds, steps=Steps.from_list(clip_steps, step_dim) if steps else None)
