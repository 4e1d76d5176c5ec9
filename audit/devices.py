"""Which accelerator a run uses: Lightning's names, with a clear line instead of a hang or traceback."""

from __future__ import annotations

import sys

import torch

from audit.errors import UserError


def resolve_accelerator(requested: str) -> str:
    """'cpu' or 'gpu'. 'auto' takes a GPU when there is one and says so when there is none."""
    has_gpu = torch.cuda.is_available()
    if requested == "gpu" and not has_gpu:
        raise UserError("--accelerator gpu: no CUDA GPU is visible (CUDA_VISIBLE_DEVICES, drivers?); "
                        "use --accelerator cpu")
    if requested == "auto":
        if not has_gpu:
            print("audit: no GPU found, running on CPU", file=sys.stderr)
        return "gpu" if has_gpu else "cpu"
    return requested


def check_launch(accelerator: str, devices, num_nodes: int) -> None:
    """Refuses, in one line, a process layout that would otherwise hang waiting for absent peers."""
    import os

    if accelerator == "gpu" and isinstance(devices, int) and devices > torch.cuda.device_count():
        raise UserError(f"--devices {devices}: only {torch.cuda.device_count()} GPU(s) visible on this node")
    if num_nodes > 1:
        slurm_nodes = os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES")
        if slurm_nodes is not None:
            if int(slurm_nodes) != num_nodes:
                raise UserError(f"--num-nodes {num_nodes}: this SLURM job has {slurm_nodes} node(s)")
        elif not all(os.environ.get(v) for v in ("MASTER_ADDR", "NODE_RANK", "WORLD_SIZE")):
            raise UserError(f"--num-nodes {num_nodes}: several nodes need a launcher (srun in a SLURM job, "
                            "or torchrun setting MASTER_ADDR, NODE_RANK and WORLD_SIZE); see slurm/audit.sh")
