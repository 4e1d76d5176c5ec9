#!/usr/bin/env bash
# audit on a SLURM cluster: one task per GPU, Lightning reads ranks from SLURM (SLURMEnvironment).
#
#   AUDIT_DATA=/data/clips AUDIT_OUT=/scratch/runs/clips sbatch slurm/audit.sh [extra audit flags]
#
# Settings (environment variables, exported to the job by sbatch):
#   AUDIT_DATA         --data: folder, manifest CSV/Parquet, or fsdd        (required)
#   AUDIT_OUT          --out: output folder on a shared file system         (required)
#   AUDIT_ENCODER      --encoder (default: audit's own, `python -m audit --help`)
#   AUDIT_ACCELERATOR  --accelerator (default: gpu; cpu for CPU-only partitions)
#   AUDIT_PYTHON       the Python with audit installed (default: python)
#   AUDIT_ARGS         extra flags, e.g. "--batch-seconds 512 --precision bf16-mixed"
# Arguments after the script name are passed to audit as well, after these: a single-valued option given
# there wins (`sbatch slurm/audit.sh --encoder X` runs X alone; several encoders: --encoders A B).
#
# Compute nodes without internet (most clusters): first, on the login node, with the same arguments,
#   python -m audit fetch --data "$AUDIT_DATA" --out "$AUDIT_OUT" [--encoder X | --encoder auto]
# downloads and verifies every encoder and dataset; then submit with HF_HUB_OFFLINE=1 in the environment
# (sbatch exports it), and the job reads only the caches.
#
# Examples (the #SBATCH lines below are the 1-GPU defaults; command-line options override them):
#   1 GPU:               sbatch slurm/audit.sh
#   8 GPUs on one node:  sbatch --ntasks-per-node=8 --gpus-per-node=8 slurm/audit.sh
#   2 nodes x 8 GPUs:    sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 slurm/audit.sh
#   CPU tasks only:      AUDIT_ACCELERATOR=cpu sbatch --ntasks-per-node=2 --gpus-per-node=0 slurm/audit.sh
#
# Preemption: SLURM sends SIGUSR1 to this script 90 s before the time limit; it requeues the job,
# which then resumes from the embedding cache in $AUDIT_OUT/cache (complete shards are never redone).
#
#SBATCH --job-name=audit
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=audit-%j.out
set -euo pipefail

: "${AUDIT_DATA:?set AUDIT_DATA to a folder, a manifest, or fsdd}"
: "${AUDIT_OUT:?set AUDIT_OUT to an output folder on a shared file system}"
ACCELERATOR=${AUDIT_ACCELERATOR:-gpu}
PY=${AUDIT_PYTHON:-python}
NODES=${SLURM_JOB_NUM_NODES:-1}
TASKS=${SLURM_NTASKS:-1}
PER_NODE=$((TASKS / NODES))

requeue() {
    echo "audit: time limit near, requeueing job ${SLURM_JOB_ID}; it resumes from the embedding cache"
    scontrol requeue "${SLURM_JOB_ID}"
}
trap requeue USR1

# srun starts one process per task; `wait` keeps the shell free to take the signal.
# shellcheck disable=SC2086  # AUDIT_ARGS is a list of flags
srun --kill-on-bad-exit=1 "$PY" -m audit --data "$AUDIT_DATA" --out "$AUDIT_OUT" ${AUDIT_ENCODER:+--encoder "$AUDIT_ENCODER"} \
    --accelerator "$ACCELERATOR" --devices "$PER_NODE" --num-nodes "$NODES" --no-progress \
    ${AUDIT_ARGS:-} "$@" &
wait $!
