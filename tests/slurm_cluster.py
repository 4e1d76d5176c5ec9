"""A real single-node SLURM on localhost for the tests (recipe: ../shared/docs/SLURM.md).

The node advertises generic "gpu" resources backed by stand-in device files (no GPU here), so that
slurm/audit.sh, whose #SBATCH lines ask for GPUs as on a real cluster, is accepted as it is; the
job itself runs with --accelerator cpu.

Needs Debian's slurm-wlm and munge (.ci/run installs them) and root. Starts munged if it is not
running, slurmctld and slurmd with their state in a temporary folder, and stops what it started.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

FAKE_GPU_FILES = ("/dev/null", "/dev/zero")  # stand-ins: slurmd counts a gpu per device file
FAKE_GPUS = len(FAKE_GPU_FILES)
CONF = """ClusterName=audittest
SlurmctldHost={host}
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation={state}/state
SlurmdSpoolDir={state}/spool
SlurmUser=root
ReturnToService=2
GresTypes=gpu
NodeName={host} CPUs={cpus} RealMemory=8000 Gres=gpu:{gpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def available() -> str | None:
    """None if a local SLURM can be started here, else why not."""
    missing = [c for c in ("sbatch", "slurmctld", "slurmd", "munged", "scontrol") if not shutil.which(c)]
    if missing:
        return f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the local SLURM recipe runs its daemons as root"
    return None


class LocalSlurm:
    def __init__(self, state: Path):
        self.state = state
        self.procs: list[subprocess.Popen] = []
        self.started_munge = False
        self.env = {**os.environ, "SLURM_CONF": str(state / "slurm.conf")}

    def start(self) -> "LocalSlurm":
        host = socket.gethostname().split(".")[0]
        (self.state / "state").mkdir(parents=True)
        (self.state / "spool").mkdir()
        (self.state / "slurm.conf").write_text(CONF.format(host=host, state=self.state, cpus=os.cpu_count(),
                                                           gpus=FAKE_GPUS))
        (self.state / "gres.conf").write_text("".join(f"NodeName={host} Name=gpu File={dev}\n" for dev in FAKE_GPU_FILES))
        self._munge()
        conf = str(self.state / "slurm.conf")
        for cmd in (["slurmctld", "-D", "-f", conf, "-L", str(self.state / "ctld.log")],
                    ["slurmd", "-D", "-f", conf, "-L", str(self.state / "d.log")]):
            self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 60
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mixed"):
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"local SLURM did not come up; see {self.state}/ctld.log and d.log")

    def _munge(self) -> None:
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
            return
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            shutil.chown(key, "munge", "munge")
            key.chmod(0o400)
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["su", "munge", "-s", "/bin/sh", "-c", "/usr/sbin/munged"], check=True)
        self.started_munge = True

    def sbatch(self, *args: str, env: dict | None = None) -> str:
        out = subprocess.run(["sbatch", "--parsable", *args], env={**self.env, **(env or {})},
                             capture_output=True, text=True, check=True)
        return out.stdout.strip().split(";")[0]

    def wait(self, job: str, timeout: float = 900) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run(["scontrol", "-o", "show", "job", job], env=self.env, capture_output=True, text=True)
            fields = dict(re.findall(r"(\w+)=(\S*)", out.stdout))
            if fields.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
                return fields
            time.sleep(1)
        raise TimeoutError(f"job {job} still running after {timeout} s")

    def stop(self) -> None:
        subprocess.run(["scontrol", "shutdown"], env=self.env, capture_output=True)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.started_munge:
            subprocess.run(["pkill", "-x", "munged"])
