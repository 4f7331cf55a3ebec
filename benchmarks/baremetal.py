#!/usr/bin/env python3
"""The EL2 hypervisor (baremetal/), on this machine under QEMU's virt machine:

    python3 benchmarks/baremetal.py [--runs N] [--cpu max|cortex-a53]

  trap round trip   HVC from the guest to the hypervisor and back (PSCI_VERSION), per second:
                    100 000 of them (tests/guests/hvc_loop.S), timed between its two lines
  image             the hypervisor's binary, and its size in memory (BSS, stacks, tables)
  code              lines of C, assembly and headers in baremetal/, and those not blank

On an x86 machine QEMU emulates the CPU (TCG): the round trips measure QEMU as much as the
hypervisor. Linux's boot time under the hypervisor against the same QEMU without it comes
when Linux boots on it (the virtual GIC).
"""

from __future__ import annotations

import argparse
import statistics
import struct
import subprocess
import sys
import time

from vmm import ROOT, Console

ROUND_TRIPS = 100_000


def round_trips_per_second(cpu: str) -> float:
    guest = ROOT / "build" / "guests" / "hvc_loop.bin"
    c = Console([sys.executable, "-m", "elvisor", "baremetal", "run", "--cpu", cpu,
                 "--binary", str(guest)])  # fmt: skip
    try:
        c.wait_for(b"hvc loop: start")
        begin = time.monotonic()
        c.wait_for(b"hvc loop: done")
        return ROUND_TRIPS / (time.monotonic() - begin)
    finally:
        c.close()


def code_lines() -> tuple[int, int]:
    files = subprocess.run(["git", "ls-files", "*.c", "*.h", "*.S"], cwd=ROOT / "baremetal",
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    lines = [line for f in files for line in (ROOT / "baremetal" / f).read_text().splitlines()]
    return len(lines), sum(1 for line in lines if line.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpu", default="max")
    args = parser.parse_args()
    subprocess.run(["make", "-s", "guests"], cwd=ROOT, check=True)
    rates = [round_trips_per_second(args.cpu) for _ in range(args.runs)]
    binary = (ROOT / "build" / "baremetal" / "qemu-virt" / "elvisor-el2.bin").read_bytes()
    in_memory = struct.unpack_from("<Q", binary, 16)[0]  # the Image header's image_size
    total, code = code_lines()
    print(f"\nelvisor EL2 under QEMU (-cpu {args.cpu}), median of {args.runs} runs")
    print(f"trap round trips (HVC)   {statistics.median(rates):>12,.0f} /s")
    print(f"hypervisor binary        {len(binary):>12,} bytes ({in_memory:,} in memory)")
    print(f"baremetal/ C, asm, .h    {total:>12,} lines ({code:,} not blank)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
