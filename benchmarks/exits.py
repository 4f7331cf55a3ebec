#!/usr/bin/env python3
"""The MMIO exit round trip of this tree against an earlier revision's, in one run:

    python3 benchmarks/exits.py --before REV [--runs N] [--profile P] [-- ELVISOR_RUN_OPTIONS]

Both trees run the same test guest (mmio_loop.elf: 100 000 reads of the PL011's UARTFR),
one after the other, N times each, so that both see the same machine; printed: each tree's
median and range in microseconds per exit, and the ratio of the medians. Options after `--`
go to this tree's `elvisor run` only (e.g. `-- --stats`, to see what watching costs).

The earlier revision is taken with `git archive` into build/exits-before/ (in the checkout,
so that the lab sees it). On a machine that is not an arm64 KVM host this runs itself inside
the lab, where the figures are nested and software-emulated: compare the ratio. The spread of
each tree's runs is the noise: a difference inside it is no difference.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = ROOT / "build" / "exits-before"
GUEST = ROOT / "build" / "guests" / "mmio_loop.elf"
MMIO_READS = 100_000
TIMEOUT = 900.0


def round_trip(tree: Path, options: list[str]) -> float:
    """Microseconds per exit of one run of the MMIO loop under `tree`'s elvisor."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    command = [sys.executable, "-m", "elvisor", "run", "--binary", str(GUEST), *options]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, cwd=tree)  # fmt: skip
    assert proc.stdout is not None
    output, begin, deadline = b"", None, time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            data = os.read(proc.stdout.fileno(), 4096)
            if not data:
                break
            output += data
            if begin is None and b"mmio loop: start" in output:
                begin = time.monotonic()
            if begin is not None and b"mmio loop: done" in output:
                return (time.monotonic() - begin) / MMIO_READS * 1e6
        raise RuntimeError(f"{tree}: the MMIO loop did not finish: {output[-200:]!r}")
    finally:
        proc.kill()
        proc.wait()


def inside(runs: int, options: list[str]) -> None:
    trees = {"before": BEFORE, "this tree": ROOT}
    times: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(runs):
        for name, tree in trees.items():
            times[name].append(round_trip(tree, options if tree == ROOT else []))
    revision = (BEFORE / ".revision").read_text().strip()
    print(f"\nMMIO exit round trip, {runs} runs each, alternating ({os.uname().release})")
    for name, samples in times.items():
        label = f"{name} ({revision})" if name == "before" else f"{name} {' '.join(options)}"
        print(f"  {label:<40} median {statistics.median(samples):8.1f} us, "
              f"range {min(samples):.1f}-{max(samples):.1f}")  # fmt: skip
    ratio = statistics.median(times["this tree"]) / statistics.median(times["before"])
    print(f"  {'this tree / before':<40} {ratio:8.3f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="the earlier revision (git)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", default="max")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("options", nargs="*", help="options for this tree's elvisor run")
    args = parser.parse_args()
    if args.inside:
        inside(args.runs, args.options)
        return 0
    if not args.before:
        parser.error("--before REV: the revision to compare with")
    subprocess.run(["make", "-s", "guests"], cwd=ROOT, check=True)
    shutil.rmtree(BEFORE, ignore_errors=True)
    BEFORE.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", args.before, "src"], cwd=ROOT,
                             capture_output=True, check=True).stdout  # fmt: skip
    subprocess.run(["tar", "x", "-C", str(BEFORE)], input=archive, check=True)
    revision = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
    (BEFORE / ".revision").write_text(revision)
    command = ["python3", "benchmarks/exits.py", "--inside", "--runs", str(args.runs), "--"]
    if platform.machine() in ("aarch64", "arm64") and os.path.exists("/dev/kvm"):
        return subprocess.call([sys.executable, *command[1:], *args.options], cwd=ROOT)
    lab = [sys.executable, "-m", "elvisor", "lab", "run", "--profile", args.profile, "--"]
    return subprocess.call([*lab, *command, *args.options], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
