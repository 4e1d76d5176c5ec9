"""The result must not depend on how many processes computed it: 2 gloo ranks, and a real SLURM job."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import slurm_cluster
from audit.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def one_process(subset_dir, ecapa, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "out"
    assert main(["--data", str(subset_dir), "--encoder", ecapa, "--out", str(out), "--cache-dir", str(cache_dir),
                 "--accelerator", "cpu", "--devices", "1", "--no-progress"]) == 0
    return out


def assert_same_issues(a, b):
    """Same clips in the same order with the same labels and flags; scores equal to float rounding.

    Ranks run with fewer threads each, and a thread count changes the last bits of a convolution.
    """
    for name in ("issues.csv", "scores.csv"):
        x, y = pd.read_csv(a / name), pd.read_csv(b / name)
        cols = ["rank", "path", "given_label", "suggested_label", "is_label_issue"]
        pd.testing.assert_frame_equal(x[cols], y[cols])
        np.testing.assert_allclose(x["label_quality"], y["label_quality"], rtol=1e-3, atol=1e-6)


def test_two_cpu_ranks_give_the_same_issues_as_one_process(one_process, subset_dir, ecapa, tmp_path):
    out = tmp_path / "ddp"
    done = subprocess.run([sys.executable, "-m", "audit", "--data", str(subset_dir), "--encoder", ecapa,
                           "--out", str(out), "--accelerator", "cpu", "--devices", "2", "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    shards = {p.name.split("-")[1] for p in (out / "cache").glob("*/shard-*.npz")}
    assert shards == {"rank0", "rank1"}  # both ranks embedded their share
    assert_same_issues(one_process, out)


def test_several_nodes_without_a_launcher_is_one_clear_line(subset_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "NODE_RANK", "WORLD_SIZE"))}
    done = subprocess.run([sys.executable, "-m", "audit", "--data", str(subset_dir), "--out", str(tmp_path / "o"),
                           "--encoder", str(tmp_path), "--accelerator", "cpu", "--devices", "2", "--num-nodes", "2",
                           "--cache-dir", str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2
    assert "several nodes need a launcher" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = slurm_cluster.available()
    if why and os.environ.get("CI"):
        pytest.fail(f"CI must run the SLURM test: {why}")
    if why:
        pytest.skip(why)
    cluster = slurm_cluster.LocalSlurm(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


def test_slurm_job_with_two_tasks_matches_one_process(slurm, one_process, subset_dir, ecapa, tmp_path):
    out = tmp_path / "slurm-out"
    env = {"AUDIT_DATA": str(subset_dir), "AUDIT_OUT": str(out), "AUDIT_ENCODER": ecapa,
           "AUDIT_ACCELERATOR": "cpu", "AUDIT_PYTHON": sys.executable}
    job = slurm.sbatch("--ntasks-per-node=2", f"--gpus-per-node={slurm_cluster.FAKE_GPUS}", "--cpus-per-task=1", f"--output={tmp_path}/job-%j.out",
                       f"--chdir={ROOT}", os.path.join(ROOT, "slurm", "audit.sh"), env=env)
    state = slurm.wait(job)
    log = "\n".join(p.read_text() for p in tmp_path.glob("job-*.out"))
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", log
    assert {p.name.split("-")[1] for p in (out / "cache").glob("*/shard-*.npz")} == {"rank0", "rank1"}, log
    assert_same_issues(one_process, out)

    # A requeued job finds every shard done: no rank embeds again, and only rank 0 writes the outputs.
    again = slurm.sbatch("--ntasks-per-node=2", f"--gpus-per-node={slurm_cluster.FAKE_GPUS}", "--cpus-per-task=1",
                         f"--output={tmp_path}/again-%j.out", f"--chdir={ROOT}",
                         os.path.join(ROOT, "slurm", "audit.sh"), env=env)
    state = slurm.wait(again)
    log = "\n".join(p.read_text() for p in tmp_path.glob("again-*.out"))
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", log
    assert json.loads((out / "summary.json").read_text())["n_embedded_now"] == 0
    assert log.count("CV accuracy") == 1, log  # one summary: rank 1 stopped after the (empty) embedding stage
    assert_same_issues(one_process, out)


def test_slurm_encoder_after_the_script_name_replaces_the_scripts_own(slurm, subset_dir, ecapa, xvector_dir, cache_dir,
                                                                      tmp_path):
    """`sbatch slurm/audit.sh --encoder X` runs X alone: not the script's encoder and X concatenated."""
    out = tmp_path / "one-encoder"
    env = {"AUDIT_DATA": str(subset_dir), "AUDIT_OUT": str(out), "AUDIT_ENCODER": str(xvector_dir),
           "AUDIT_ACCELERATOR": "cpu", "AUDIT_PYTHON": sys.executable}
    job = slurm.sbatch("--ntasks-per-node=1", "--gpus-per-node=1", "--cpus-per-task=1",
                       f"--output={tmp_path}/job-%j.out", f"--chdir={ROOT}", os.path.join(ROOT, "slurm", "audit.sh"),
                       "--encoder", ecapa, "--cache-dir", str(cache_dir), env=env)  # the session's ECAPA cache
    state = slurm.wait(job)
    log = "\n".join(p.read_text() for p in tmp_path.glob("job-*.out"))
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["encoder"] == ecapa and summary["embedding_dim"] == 6144, (summary["encoder"], log)  # ECAPA's frames
