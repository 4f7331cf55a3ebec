#!/usr/bin/env python3
"""The control plane, measured on the default guest, all figures from one run:

    python3 benchmarks/control.py [--runs N] [--profile P]

  cold boot to init   process start -> the default guest's init prints its marker
  restore             process start (elvisor run --restore) -> the restored guest answers a
                      console command; and its ratio to the cold boot, in the same run
  snapshot create     PUT /snapshot/create on the paused guest; the state file's size, the
                      memory file's size and the disk space it takes (it is sparse)
  pause, resume       PATCH /vm round trips (the guest's vCPUs parked, then going again)
  API round trip      GET / on the API socket
  VMM memory          resident memory of the process, guest RAM excluded, at the shell, with
                      --api-sock (the API thread) and without

On a machine that is not an arm64 KVM host this runs itself inside the lab (as vmm.py does).
In the lab the figures are nested and software-emulated: compare the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from vmm import INIT_MARKER, Console  # noqa: E402

GUEST_RAM_MIB = 256
PROMPT = b"~ # "
ROUND_TRIPS = 50


def elvisor(*args: str) -> list[str]:
    return [sys.executable, "-m", "elvisor", "run", "--memory", f"{GUEST_RAM_MIB}M", *args]


def rss_mib(console: Console) -> float:
    import vmm

    vmm.GUEST_RAM_MIB = GUEST_RAM_MIB  # (which mapping is guest RAM: the one of its size)
    return console.rss_without_guest_ram_mib()


def timed(call, times: int) -> float:
    """Median seconds of `call()`."""
    samples = []
    for _ in range(times):
        begin = time.monotonic()
        call()
        samples.append(time.monotonic() - begin)
    return statistics.median(samples)


def measure(scratch: Path) -> dict[str, float]:
    from elvisor.api.client import request

    figures: dict[str, float] = {}
    cold = Console(elvisor())
    try:
        figures["cold boot to init (s)"] = cold.wait_for(INIT_MARKER)
        cold.wait_for(PROMPT)
        figures["VMM memory, no API (MiB)"] = rss_mib(cold)
    finally:
        cold.close()

    sock, snapshot = scratch / "api.sock", scratch / "snapshot"
    vm = Console(elvisor("--api-sock", str(sock)))
    try:
        vm.wait_for(PROMPT)
        figures["VMM memory, API (MiB)"] = rss_mib(vm)
        figures["API round trip (ms)"] = 1e3 * timed(lambda: request(sock, "GET", "/"), ROUND_TRIPS)
        pause = {"state": "Paused"}
        resume = {"state": "Resumed"}
        pauses, resumes = [], []
        for _ in range(ROUND_TRIPS // 5):
            pauses.append(timed(lambda: request(sock, "PATCH", "/vm", pause), 1))
            resumes.append(timed(lambda: request(sock, "PATCH", "/vm", resume), 1))
        figures["pause (ms)"] = 1e3 * statistics.median(pauses)
        figures["resume (ms)"] = 1e3 * statistics.median(resumes)
        request(sock, "PATCH", "/vm", pause)
        paths = {"snapshot_path": str(snapshot / "state.json"),
                 "mem_file_path": str(snapshot / "memory")}  # fmt: skip
        begin = time.monotonic()
        status, answer = request(sock, "PUT", "/snapshot/create", paths)
        assert status == 204, answer
        figures["snapshot create (s)"] = time.monotonic() - begin
    finally:
        vm.close()
    memory = os.stat(snapshot / "memory")
    figures["state file (KiB)"] = os.stat(snapshot / "state.json").st_size / 1024
    figures["memory file (MiB)"] = memory.st_size / 2**20
    figures["memory on disk (MiB)"] = memory.st_blocks * 512 / 2**20

    restored = Console([sys.executable, "-m", "elvisor", "run", "--restore", str(snapshot)])
    try:
        restored.send("echo restored-$((6*7))")
        figures["restore (s)"] = restored.wait_for(b"restored-42")
    finally:
        restored.close()
    return figures


def inside(runs: int) -> None:
    from elvisor.images import default_guest

    default_guest()
    # compiled once before anything is timed: the first start would otherwise compile the
    # whole VMM and count that against the cold boot
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], check=True)
    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as scratch:
            results.append(measure(Path(scratch)))
    medians = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(f"\nelvisor's control plane, median of {runs} runs ({os.uname().release}, "
          f"{GUEST_RAM_MIB} MiB guest)")  # fmt: skip
    for key, value in medians.items():
        print(f"  {key:<28}{value:>10.3f}")
    ratio = medians["restore (s)"] / medians["cold boot to init (s)"]
    print(f"  {'restore / cold boot to init':<28}{ratio:>9.3f}x  (goal: 0.1x or less)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", default="max")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args.runs)
        return 0
    from elvisor.images import default_guest

    default_guest()
    command = ["python3", "benchmarks/control.py", "--inside", "--runs", str(args.runs)]
    lab = [sys.executable, "-m", "elvisor", "lab", "run", "--profile", args.profile, "--"]
    return subprocess.call([*lab, *command], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
