"""Peak RSS of a run with a one-hour 44.1 kHz stereo file against the same run without it.

Issue 11: long files are read window by window, so one hour of audio must not raise the peak RSS of
a run by more than a few hundred MB over a run of short clips. Both runs are the real CLI in a fresh
process (ECAPA weights, CPU, --num-workers 1, a fresh cache each), with 20 real FSDD clips (two digits x
10); the second adds the long file (pink noise with spoken FSDD digits every few seconds, made by sox),
labelled like the first digit. Peak RSS: ru_maxrss of the waited run (wait4), which on Linux is the
largest of the run and its own waited children (the decoding worker).

    .venv/bin/python bench/bench_long_rss.py            # ~4 min on 2 cores
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
HOUR = 3600


def make_long(path: Path, fsdd: Path) -> None:
    """One hour, 44.1 kHz, 16-bit stereo: pink noise at -30 dB with a spoken digit every ~5 s (sox)."""
    voice = path.with_name("voice.wav")
    digits = sorted(fsdd.glob("3_jackson_*.wav"))[:10]
    subprocess.run(["sox", *map(str, digits), "-r", "44100", "-c", "2", str(voice), "pad", "0", "4"], check=True)
    once = voice.with_name("voice_once.wav")
    reps = int(HOUR / float(subprocess.run(["soxi", "-D", str(voice)], capture_output=True, text=True).stdout)) + 1
    subprocess.run(["sox", str(voice), str(once), "repeat", str(reps - 1), "trim", "0", str(HOUR)], check=True)
    noise = path.with_name("noise.wav")
    subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", "-b", "16", str(noise), "synth", str(HOUR), "pinknoise",
                    "vol", "0.03"], check=True)
    subprocess.run(["sox", "-m", str(once), str(noise), "-b", "16", str(path)], check=True)
    for p in (voice, once, noise):
        p.unlink()


def run(manifest: Path, out: Path, ecapa: Path) -> dict:
    cmd = [sys.executable, "-m", "audit", "--data", str(manifest), "--encoder", str(ecapa), "--out", str(out),
           "--accelerator", "cpu", "--num-workers", "1", "--no-progress"]
    t = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = child.stderr.read()  # before waiting: a full pipe would block the run
    _, status, usage = os.wait4(child.pid, 0)
    assert status == 0, err[-2000:]
    return {"wall_s": round(time.perf_counter() - t, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def main() -> None:
    from conftest import ecapa_dir, fsdd_recordings

    work = ROOT / "bench" / "out" / "long_rss"
    work.mkdir(parents=True, exist_ok=True)
    fsdd = fsdd_recordings()
    long = work / "one_hour_44k_stereo.wav"
    if not long.is_file():
        make_long(long, fsdd)
    short = [(str(fsdd / f"{d}_theo_{n}.wav"), str(d)) for d in (3, 8) for n in range(10)]
    results = {}
    for name, rows in (("short clips only", short), ("plus the one-hour file", short + [(str(long), "3")])):
        manifest = work / f"{name.split()[0]}.csv"
        with open(manifest, "w", newline="") as f:
            csv.writer(f).writerows([("path", "label"), *rows])
        out = work / f"out-{name.split()[0]}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        results[name] = run(manifest, out, ecapa_dir())
        print(name, results[name], flush=True)
    size = long.stat().st_size / 2**20
    extra = results["plus the one-hour file"]["peak_rss_mb"] - results["short clips only"]["peak_rss_mb"]
    print("\n| run | wall s | peak RSS MB |\n|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['wall_s']} | {r['peak_rss_mb']} |")
    print(f"\none hour, 44.1 kHz stereo 16-bit = {size:.0f} MB on disk; peak RSS difference {extra:+d} MB")
    (work / "result.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
