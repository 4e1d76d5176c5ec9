"""Shared fixtures: real FSDD audio and real ECAPA weights, found without a network where possible.

Assets are looked up in this order: an environment variable (AUDIT_FSDD_DIR, AUDIT_ECAPA_DIR), then
../shared beside the repository (as on the project's machines and CI), then a download (a user's
clone with internet access).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).parent / "fixtures"))

SUBSET_SPEAKERS = ("george", "jackson", "nicolas", "yweweler")
SUBSET_PER_SPEAKER = 5  # 10 digits x 4 speakers x 5 = 200 clips: ~5 s to embed with ECAPA on 2 cores
# Clips whose label the subset fixture flips, with the label they get: the test truth.
FLIPS = {"3_george_1.wav": "8", "5_jackson_2.wav": "1", "0_nicolas_3.wav": "6",
         "7_yweweler_0.wav": "2", "9_george_4.wav": "4", "2_jackson_0.wav": "5"}


def fsdd_recordings() -> Path:
    if os.environ.get("AUDIT_FSDD_DIR"):
        root = Path(os.environ["AUDIT_FSDD_DIR"])
    elif (SHARED / "data" / "fsdd").is_dir():
        root = SHARED / "data" / "fsdd"
    else:
        from audit.fsdd import fsdd_files

        return fsdd_files()[0].parent  # downloads the pinned release once into the cache
    return root / "recordings" if (root / "recordings").is_dir() else root


def ecapa_dir() -> Path:
    if os.environ.get("AUDIT_ECAPA_DIR"):
        return Path(os.environ["AUDIT_ECAPA_DIR"])
    if (SHARED / "models" / "spkrec-ecapa-voxceleb").is_dir():
        return SHARED / "models" / "spkrec-ecapa-voxceleb"
    from huggingface_hub import snapshot_download

    return Path(snapshot_download("speechbrain/spkrec-ecapa-voxceleb"))


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    return fsdd_recordings()


@pytest.fixture(scope="session")
def ecapa() -> str:
    return str(ecapa_dir())


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One embedding cache for the whole session: each clip is embedded once across tests."""
    return tmp_path_factory.mktemp("embedding-cache")


@pytest.fixture(scope="session")
def subset_dir(tmp_path_factory, fsdd_dir) -> Path:
    """200 real FSDD clips (4 speakers x 10 digits x 5), with the labels in FLIPS flipped by renaming."""
    folder = tmp_path_factory.mktemp("fsdd-subset")
    for digit in range(10):
        for speaker in SUBSET_SPEAKERS:
            for n in range(SUBSET_PER_SPEAKER):
                name = f"{digit}_{speaker}_{n}.wav"
                label = FLIPS.get(name, str(digit))
                shutil.copy(fsdd_dir / name, folder / f"{label}_{speaker}_{n}_orig{digit}.wav")
    return folder


@pytest.fixture(scope="session")
def xvector_dir(tmp_path_factory) -> Path:
    from build_xvector import build_xvector

    return build_xvector(tmp_path_factory.mktemp("xvector"))


def flipped_names() -> set[str]:
    """File names in subset_dir of the clips whose label was flipped."""
    out = set()
    for name, label in FLIPS.items():
        digit, speaker, n = name[:-4].split("_")
        out.add(f"{label}_{speaker}_{n}_orig{digit}.wav")
    return out
