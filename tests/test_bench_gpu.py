"""bench/gpu.sh runs its whole path on the CPU at a tiny size, so the one device run cannot fail on a typo."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_runs_every_part_on_cpu_at_a_tiny_size(tmp_path):
    out = tmp_path / "gpu.md"
    result = subprocess.run(["bash", "bench/gpu.sh"], cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "TINY": "1", "ACCELERATOR": "cpu", "OUT": str(out)})
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    for marker in ("| x-vector (random weights) | 32-true |", "| ECAPA | 32-true |", "clips/s per worker",
                   "identical", "post-embedding stages, 2000 x 512"):
        assert marker in text, (marker, text)
