"""The embedding stage: clips -> (N, D) embeddings through a frozen encoder, cached in shards.

Notation: N clips, B clips in a batch, T samples, D embedding dim. Runs as a Lightning
`Trainer.predict`, so the same code serves CPU, one GPU, and many GPUs or nodes: every rank embeds
its share of the globally formed batches and writes its own shards; rank 0 then reads the cache.
Only batches with a clip missing from the cache are computed, so a rerun, or a run killed
half-way, computes only what is missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from audit import padding
from audit.batching import Batch, ClipDataset, FixedBatches, bucket_batches, collate, probe_all
from audit.cache import ShardStore, clip_keys
from audit.devices import check_launch, launcher_rank
from audit.encoder import encoder_key, load_encoder
from audit.errors import UserError

SHARD_CLIPS = 1024  # clips per cache shard: at most this much work is redone after a kill


@dataclass(frozen=True)
class Embeddings:
    emb: np.ndarray  # (N, D) float32; rows of failed clips are NaN
    failed: dict  # {row: reason}
    n_computed: int  # clips embedded in this run (the rest came from the cache)
    seconds: float
    is_rank_zero: bool = True  # other ranks only embed their share: their result holds no embeddings


@dataclass(frozen=True)
class EmbedOptions:
    encoder: str
    cache_dir: Path
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    batch_seconds: float = 32.0
    num_workers: int = 1
    shard_clips: int = SHARD_CLIPS
    progress: bool = True


class EncoderModule(L.LightningModule):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def on_predict_start(self):
        # encode_batch moves its inputs to the encoder's own `device`, which Lightning doesn't update.
        self.encoder.device = self.device
        padding.reflect_padding(self.encoder)

    def transfer_batch_to_device(self, batch: Batch, device, dataloader_idx):
        return Batch(batch.index, batch.wavs.to(device, non_blocking=True),
                     batch.lens.to(device, non_blocking=True), batch.failed)

    def predict_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if len(batch.index) == 0:
            return torch.empty(0, 0)
        return encode(self.encoder, batch.wavs, batch.lens).float().cpu()  # (B, D)


def encode(encoder, wavs: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Embeddings (B, D) of a padded batch wavs (B, T), lens (B,), each as if encoded alone."""
    padding.reflect_padding(encoder)
    frames, frame_lens = padding.frame_lengths(encoder, wavs, lens)  # (B,), (B,)
    with padding.clip_frames(encoder, frames):
        return encoder.encode_batch(wavs, frame_lens).squeeze(1)  # (B, D)


class ShardWriter(BasePredictionWriter):
    """Buffers each rank's embeddings and writes a cache shard every `shard_clips` clips (whole batches)."""

    def __init__(self, store: ShardStore, keys: list[str], n_clips: int, shard_clips: int, progress: bool):
        super().__init__(write_interval="batch")
        self.store, self.keys, self.n_clips, self.progress = store, keys, n_clips, progress
        self.shard_clips = shard_clips
        self._reset()

    def _reset(self):
        self.rows, self.embs, self.failed = [], [], []

    def on_predict_start(self, trainer, pl_module):
        on = self.progress and trainer.global_rank == 0
        desc = "embedding" if trainer.world_size == 1 else f"embedding (rank 0 of {trainer.world_size})"
        self.bar = tqdm(total=self.n_clips, unit="clip", desc=desc, disable=not on, smoothing=0.1)
        self.rank = trainer.global_rank

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        self.rows += batch.index.tolist()
        if len(batch.index):
            self.embs.append(prediction.numpy())
        self.failed += batch.failed
        self.bar.update(len(batch.index) + len(batch.failed))
        if len(self.rows) + len(self.failed) >= self.shard_clips:
            self._flush()

    def on_predict_end(self, trainer, pl_module):
        self._flush()
        self.bar.close()

    def _flush(self):
        if not self.rows and not self.failed:
            return
        emb = np.concatenate(self.embs) if self.embs else np.zeros((0, 0), np.float32)  # (n, D)
        self.store.write([self.keys[r] for r in self.rows], emb,
                         [(self.keys[r], reason) for r, reason in self.failed], tag=f"rank{self.rank}")
        self._reset()


class ClipData(L.LightningDataModule):
    """Deals the batches to ranks only once the Trainer knows the rank (batch i goes to rank i % W)."""

    def __init__(self, files: list[str], batches: list[list[int]], num_workers: int, pin_memory: bool):
        super().__init__()
        self.files, self.batches, self.num_workers, self.pin_memory = files, batches, num_workers, pin_memory

    def predict_dataloader(self):
        mine = self.batches[self.trainer.global_rank :: self.trainer.world_size]
        return DataLoader(ClipDataset(self.files), batch_sampler=FixedBatches(mine), collate_fn=collate,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          prefetch_factor=4 if self.num_workers else None)


def embed(files: list[str], opts: EmbedOptions) -> Embeddings:
    """Embeddings (N, D) for `files`, from the cache where possible; unusable clips in `failed`."""
    start = time.perf_counter()
    keys = clip_keys(files)
    durations, failed = probe_all(files)  # (N,)
    store = ShardStore(Path(opts.cache_dir) / encoder_key(opts.encoder))
    cached, cached_failed = store.load()
    batches = bucket_batches(durations, opts.batch_seconds)
    todo = [b for b in batches if any(keys[i] not in cached and keys[i] not in cached_failed for i in b)]
    n_todo = sum(len(b) for b in todo)
    # Nothing to embed means no Trainer, so the launcher's rank (srun, torchrun) tells who goes on.
    rank = _predict(files, keys, todo, n_todo, store, opts) if todo else launcher_rank()
    if rank != 0:
        return Embeddings(emb=np.zeros((0, 0), np.float32), failed={}, n_computed=n_todo,
                          seconds=time.perf_counter() - start, is_rank_zero=False)
    if todo:
        cached, cached_failed = store.load()
    dim = len(next(iter(cached.values()))) if cached else 0
    emb = np.full((len(files), dim), np.nan, dtype=np.float32)  # (N, D)
    for i, k in enumerate(keys):
        if i in failed:
            continue
        if k in cached:
            emb[i] = cached[k]
        else:
            failed[i] = cached_failed.get(k, "not embedded (missing from the cache after the run)")
    return Embeddings(emb=emb, failed=dict(sorted(failed.items())), n_computed=n_todo,
                      seconds=time.perf_counter() - start)


def _predict(files, keys, todo, n_todo, store, opts: EmbedOptions) -> int:
    """Embeds the `todo` batches across all ranks into the store; returns this process's global rank."""
    check_launch(opts.accelerator, opts.devices, opts.num_nodes)
    encoder = load_encoder(opts.encoder, Path(opts.cache_dir))
    try:
        trainer = L.Trainer(
            accelerator=opts.accelerator, devices=opts.devices, num_nodes=opts.num_nodes,
            strategy=opts.strategy, precision=opts.precision, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
            callbacks=[ShardWriter(store, keys, n_todo, opts.shard_clips, opts.progress)],
        )
    except (ValueError, RuntimeError, TypeError) as e:  # Lightning's MisconfigurationException is a ValueError
        raise UserError(f"cannot run on --accelerator {opts.accelerator} --devices {opts.devices} "
                        f"--num-nodes {opts.num_nodes} --strategy {opts.strategy}: {' '.join(str(e).split())}") from None
    share = sum(len(b) for b in todo[trainer.global_rank :: trainer.world_size])
    trainer.callbacks[0].n_clips = share
    data = ClipData(files, todo, opts.num_workers, pin_memory=trainer.accelerator.__class__.__name__ == "CUDAAccelerator")
    trainer.predict(EncoderModule(encoder), datamodule=data, return_predictions=False)
    trainer.strategy.barrier()  # every rank's shards are on disk before rank 0 reads the cache
    return trainer.global_rank
