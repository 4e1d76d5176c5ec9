#!/usr/bin/env bash
# On a lent GPU machine (no network): install the wheels carried in bench/wheels, then measure.
# Prepare here first (with network):
#   .venv/bin/pip download -d bench/wheels -c constraints.txt speechbrain cleanlab soundfile pyarrow tqdm jinja2 pillow hyperpyyaml
# Then run on the device with bench/wheels carried:   bash bench/gpu.sh          (~7 min on an H100/H200)
# Here, the same path on CPU at a tiny size (the tests do this):   TINY=1 ACCELERATOR=cpu bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ACCELERATOR=${ACCELERATOR:-gpu}
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if ! "$PY" -c "import speechbrain, cleanlab, soundfile" 2>/dev/null; then
    [ -d bench/wheels ] || { echo "gpu.sh: speechbrain/cleanlab/soundfile missing and no bench/wheels to install from" >&2; exit 2; }
    "$PY" -m pip install -q --no-index --find-links bench/wheels --no-deps -e . 
    "$PY" -m pip install -q --no-index --find-links bench/wheels speechbrain cleanlab soundfile pyarrow tqdm jinja2 pillow
fi
ARGS=(--accelerator "$ACCELERATOR")
if [ -n "${TINY:-}" ]; then ARGS+=(--tiny --out "${OUT:-bench/out/gpu-tiny.md}"); fi
exec "$PY" bench/gpu_bench.py "${ARGS[@]}"
