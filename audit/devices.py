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
