#!/usr/bin/env python3
"""The EL2 hypervisor (baremetal/), on this machine under QEMU's virt machine:

    .venv/bin/python benchmarks/baremetal.py [--runs N] [--cpu max|cortex-a53] [--gic 2|3]

  Linux boot        the default guest's kernel and initrd (as `elvisor run` boots them) from
                    QEMU's start to its init's first line: under the hypervisor (the image
                    built beforehand, QEMU started as `elvisor baremetal run` starts it),
                    against the same kernel, initrd and command line booted directly on the
                    same QEMU machine without EL2, in the same run; the ratio is the goal's
  trap round trip   HVC from the guest to the hypervisor and back (PSCI_VERSION), per second:
                    100 000 of them (tests/guests/hvc_loop.S), timed between its two lines
  image             the hypervisor's binary, and its size in memory (BSS, stacks, tables)
  code              lines of C, assembly and headers in baremetal/, and those not blank

On an x86 machine QEMU emulates the CPU (TCG): every figure measures QEMU as much as the
hypervisor (a guest's stage-2 walks and traps cost QEMU more than they would cost a CPU).
"""

from __future__ import annotations

import argparse
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vmm import ROOT, Console

from elvisor.baremetal import build, qemu
from elvisor.config import VmConfig, boot_files

ROUND_TRIPS = 100_000
MEMORY = 256 << 20  # the VM's, and the machine's when Linux boots directly
INIT = b"elvisor-guest: init reached"


def default_guest_vm() -> VmConfig:
    kernel, initrd, cmdline = boot_files(None, None, None)
    return VmConfig(kernel=kernel, initrd=initrd, cmdline=cmdline, memory=MEMORY)


def boot_seconds(argv: list[str]) -> float:
    """QEMU's start to the guest's init saying so."""
    c = Console(argv)
    try:
        return c.wait_for(INIT)
    finally:
        c.close()


def linux_boot_commands(cpu: str, gic: int, scratch: Path) -> tuple[list[str], list[str]]:
    """QEMU's command lines for the default guest: under the hypervisor, and directly with
    the device tree the VM gets (the same devices to probe; QEMU puts in its memory, initrd
    and command line)."""
    vm = default_guest_vm()
    platform = build.PLATFORMS["qemu-virt"]
    image = build.build([vm], platform, gic)
    path = scratch / "elvisor-el2.img"
    path.write_bytes(image.data)
    under = qemu.command(path, memory=image.memory, cpus=1, gic_version=gic, cpu=cpu)
    loaded = build.load_vm(vm, "vm0", platform.ram_base, 0, gic)
    dtb = scratch / "vm.dtb"
    dtb.write_bytes(next(data for address, data in loaded.payloads if address == loaded.dtb))
    assert vm.kernel is not None and vm.initrd is not None
    direct = qemu.command(vm.kernel, memory=MEMORY, cpus=1, gic_version=gic, cpu=cpu)
    direct[direct.index("-M") + 1] = f"virt,gic-version={gic}"  # no EL2: Linux at EL1
    direct += ["-initrd", str(vm.initrd), "-append", vm.cmdline, "-dtb", str(dtb)]
    return under, direct


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
    parser.add_argument("--gic", type=int, choices=(2, 3), default=3)
    args = parser.parse_args()
    subprocess.run(["make", "-s", "guests"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as scratch:
        under_argv, direct_argv = linux_boot_commands(args.cpu, args.gic, Path(scratch))
        under, direct = [], []
        for _ in range(args.runs):  # alternated, so that a noisy spell hits both alike
            under.append(boot_seconds(under_argv))
            direct.append(boot_seconds(direct_argv))
    rates = [round_trips_per_second(args.cpu) for _ in range(args.runs)]
    binary = (ROOT / "build" / "baremetal" / "qemu-virt" / "elvisor-el2.bin").read_bytes()
    in_memory = struct.unpack_from("<Q", binary, 16)[0]  # the Image header's image_size
    total, code = code_lines()
    print(f"\nelvisor EL2 under QEMU (-cpu {args.cpu}, GICv{args.gic}), median of {args.runs} runs")
    boot, bare = statistics.median(under), statistics.median(direct)
    print(f"Linux boot to init       {boot:>12.2f} s under elvisor EL2")
    print(f"                         {bare:>12.2f} s directly: {boot / bare:.2f}x (goal <= 1.1x)")
    print(f"trap round trips (HVC)   {statistics.median(rates):>12,.0f} /s")
    print(f"hypervisor binary        {len(binary):>12,} bytes ({in_memory:,} in memory)")
    print(f"baremetal/ C, asm, .h    {total:>12,} lines ({code:,} not blank)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
