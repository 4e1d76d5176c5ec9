"""`audit fetch` on a login node, then a run on a node with no network (issue: clusters without internet)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

HUB_ID = "speechbrain/spkrec-ecapa-voxceleb"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": ""}  # and any request that still tried would meet a closed port


def hub_cache_with(root, repo_id, folder):
    """The layout huggingface_hub reads a snapshot from (what a download on the login node leaves)."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        (snapshot / f.name).symlink_to(f)
    return root


@pytest.fixture(scope="module")
def small_set(subset_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    for f in sorted(subset_dir.iterdir()):
        if f.name.split("_")[1] in ("george", "jackson") and int(f.name.split("_")[2]) < 3:
            shutil.copy(f, folder / f.name)  # 10 digits x 2 speakers x 3 = 60 clips
    return folder


def audit(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "audit", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **env}, timeout=600)


def test_fetch_then_a_run_with_no_network(small_set, ecapa, tmp_path):
    from pathlib import Path

    hub = hub_cache_with(tmp_path / "hub", HUB_ID, Path(ecapa))
    env = {**OFFLINE, "HF_HUB_CACHE": str(hub), "AUDIT_CACHE": str(tmp_path / "cache")}
    args = ["--data", str(small_set), "--encoder", HUB_ID, "--out", str(tmp_path / "out"), "--no-progress"]
    fetched = audit(["fetch", *args], env, tmp_path)
    assert fetched.returncode == 0, fetched.stderr
    assert f"encoder {HUB_ID}: speechbrain" in fetched.stdout and "HF_HUB_OFFLINE=1 python -m audit" in fetched.stdout
    run = audit(args, env, tmp_path)
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_clips"] == 60 and summary["encoder"] == HUB_ID


def test_a_run_without_its_encoder_and_no_network_is_one_line_naming_fetch(small_set, tmp_path):
    env = {**OFFLINE, "HF_HUB_CACHE": str(tmp_path / "empty-hub"), "AUDIT_CACHE": str(tmp_path / "cache")}
    run = audit(["--data", str(small_set), "--encoder", HUB_ID, "--out", str(tmp_path / "out")], env, tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "audit fetch" in run.stderr.strip().splitlines()[-1]


def test_fetch_names_every_candidate_of_auto():
    from audit.fetch import needed_encoders
    from audit.options import AUTO_CANDIDATES, RunOptions

    assert needed_encoders(RunOptions(encoder="auto")) == AUTO_CANDIDATES
    assert needed_encoders(RunOptions(encoder="auto", candidates=["a", "b"])) == ("a", "b")
    assert needed_encoders(RunOptions(encoder=["a", "b"])) == ("a", "b")
