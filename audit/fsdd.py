"""`--data fsdd`: the Free Spoken Digit Dataset, release v1.0.9 (2,500 clips), verified and cached.

Where the files come from, first match wins:
  1. $AUDIT_FSDD_DIR: a folder holding the recordings (directly or in `recordings/`),
  2. the cache ($AUDIT_CACHE or ~/.cache/audit)/fsdd-v1.0.9, filled by an earlier download,
  3. a download of the pinned release from GitHub ($AUDIT_FSDD_URL overrides the address).
Every file is checked against the SHA-256 list shipped in audit/data, so a partial download or a
different release is refused rather than silently audited.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from importlib import resources
from pathlib import Path

from tqdm.auto import tqdm

from audit import options
from audit.errors import UserError

RELEASE = "v1.0.9"
URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.9.tar.gz"
LABEL_PATTERN = r"^(?P<label>\d)_"


def expected_hashes() -> dict[str, str]:
    """{file name: sha256} of the 2,500 recordings of the pinned release."""
    text = resources.files("audit").joinpath("data", f"fsdd-{RELEASE}.sha256").read_text()
    return {name: digest for digest, name in (line.split() for line in text.splitlines() if line)}


def fsdd_files() -> list[Path]:
    """Paths of the release's recordings on this machine, verified; downloads them if needed."""
    hashes = expected_hashes()
    local = os.environ.get("AUDIT_FSDD_DIR")
    if local:
        folder = _recordings_dir(Path(local))
    else:
        folder = Path(options.cache_root()) / f"fsdd-{RELEASE}"
        if not (folder / ".verified").exists():
            _download(folder, os.environ.get("AUDIT_FSDD_URL", URL))
    _verify(folder, hashes, quick=(folder / ".verified").exists())
    return [folder / name for name in sorted(hashes)]


def _recordings_dir(root: Path) -> Path:
    return root / "recordings" if (root / "recordings").is_dir() else root


def _verify(folder: Path, hashes: dict[str, str], quick: bool) -> None:
    missing = [n for n in hashes if not (folder / n).is_file()]
    if missing:
        raise UserError(f"FSDD {RELEASE} in {folder} lacks {len(missing)} files (e.g. {missing[0]})")
    if quick:  # hashed once when it was downloaded
        return
    bad = [n for n, h in hashes.items() if _sha256(folder / n) != h]
    if bad:
        raise UserError(f"FSDD {RELEASE} in {folder}: {len(bad)} files fail their checksum (e.g. {bad[0]})")


def _download(folder: Path, url: str) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        archive = Path(tmp) / "fsdd.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading FSDD {RELEASE}") as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
        except OSError as e:
            raise UserError(f"could not download FSDD from {url}: {e}; set AUDIT_FSDD_DIR to a local copy") from None
        staged = Path(tmp) / "recordings"
        staged.mkdir()
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and Path(member.name).parent.name == "recordings" and name.endswith(".wav"):
                    with tar.extractfile(member) as src, open(staged / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        _verify(staged, expected_hashes(), quick=False)
        (staged / ".verified").touch()
        if folder.exists():
            shutil.rmtree(folder)
        staged.rename(folder)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
