#!/usr/bin/env python3
"""elvisor against QEMU (with KVM), on the same arm64 host, kernel, initrd and test guests.

    python3 benchmarks/vmm.py [--runs N] [--profile P]

On a machine that is not an arm64 KVM host, this prepares what it needs (QEMU's arm64 build
from Debian's packages, the default guest, the test guests) and runs itself inside the lab.
Printed for each VMM (median of the runs), and elvisor's figure as a ratio to QEMU's:

  start-up        process start -> the first byte a bare-metal guest prints (hello.elf)
  boot to init    process start -> the default guest's init prints its marker
  MMIO exit       one round trip guest -> VMM -> guest: 100 000 reads of an emulated register
                  (the PL011's UARTFR, in Python for elvisor, in C for QEMU) / 100 000
  VMM memory      resident memory of the VMM process, guest RAM excluded, at the guest's shell

and elvisor's own start-up: process start -> its first KVM_RUN.
In the lab these are nested, software-emulated figures: compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

GUEST_RAM_MIB = 512
TIMEOUT = 900.0
INIT_MARKER = b"elvisor-guest: init reached"
MMIO_READS = 100_000


def prepare_qemu() -> Path:
    """QEMU's arm64 build and its libraries, unpacked from Debian's packages (on the host)."""
    from elvisor.cache import cache_dir, locked
    from elvisor.debian.apt import debian_workspace, extract

    suite = "trixie"
    apt = debian_workspace(cache_dir() / "apt" / suite, suite)
    packages = apt.resolve(["qemu-system-arm"])
    qemu = next(p for p in packages if p.name == "qemu-system-arm")
    root = cache_dir() / "bench" / f"qemu-{qemu.version.replace(':', '_')}"
    with locked(cache_dir() / "bench" / ".lock"):
        if not (root / ".complete").exists():
            for deb in apt.download(packages, cache_dir() / "debs" / suite):
                extract(deb, root)
            (root / ".complete").touch()
    return root


def qemu_command(root: Path) -> list[str]:
    libs = [root / d for d in ("usr/lib/aarch64-linux-gnu", "lib/aarch64-linux-gnu")]
    loader = root / "usr/lib/ld-linux-aarch64.so.1"
    return [
        str(loader),
        "--library-path",
        ":".join(map(str, libs)),
        str(root / "usr/bin/qemu-system-aarch64"),
        "-L",
        str(root / "usr/share/qemu"),
        "-M",
        "virt,gic-version=host",
        "-cpu",
        "host",
        "-accel",
        "kvm",
        "-m",
        f"{GUEST_RAM_MIB}M",
        "-smp",
        "1",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
    ]


def elvisor_command() -> list[str]:
    return [sys.executable, "-m", "elvisor", "run", "-v", "--memory", f"{GUEST_RAM_MIB}M"]


class Console:
    """A VMM process whose console output is watched for markers, with times since spawn."""

    def __init__(self, argv: list[str]) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.output = b""
        self.errors = b""

    def wait_for(self, marker: bytes) -> float:
        """Seconds since spawn when `marker` appeared."""
        self.expect(re.escape(marker))
        return time.monotonic() - self.started

    def expect(self, pattern: bytes, after: int = 0) -> re.Match[bytes]:
        """The first match of `pattern` in the output from offset `after`, waited for."""
        assert self.proc.stdout and self.proc.stderr
        deadline = time.monotonic() + TIMEOUT
        while not (match := re.compile(pattern).search(self.output, after)):
            if time.monotonic() > deadline or (
                self.proc.poll() is not None and not select.select([self.proc.stdout], [], [], 0)[0]
            ):
                raise RuntimeError(
                    f"{pattern!r} never came: {self.output[-500:]!r} {self.errors[-500:]!r}"
                )
            ready, _, _ = select.select([self.proc.stdout, self.proc.stderr], [], [], 1.0)
            for stream in ready:
                data = os.read(stream.fileno(), 65536)
                if stream is self.proc.stdout:
                    self.output += data
                else:
                    self.errors += data
        return match

    def send(self, line: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def rss_without_guest_ram_mib(self) -> float:
        """Resident memory of every mapping but the guest's RAM (the one of its size)."""
        total_kib = 0
        size_kib = 0
        for line in Path(f"/proc/{self.proc.pid}/smaps").read_text().splitlines():
            if line.startswith("Size:"):
                size_kib = int(line.split()[1])
            elif line.startswith("Rss:") and size_kib < GUEST_RAM_MIB * 1024:
                total_kib += int(line.split()[1])
        return total_kib / 1024

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        # drain what is left so the pipes close
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


def measure(vmm: str, base: list[str], guest_dir: Path, kernel: Path, initrd: Path) -> dict:
    figures: dict[str, float] = {}
    binary = ["--binary"] if vmm == "elvisor" else ["-kernel"]
    c = Console([*base, *binary, str(guest_dir / "hello.elf")])
    try:
        figures["start-up (s)"] = c.wait_for(b"hello")
        c.proc.wait(TIMEOUT)
        if vmm == "elvisor":
            c.errors += c.proc.stderr.read() if c.proc.stderr else b""
            match = re.search(rb"monotonic clock ([\d.]+)", c.errors)
            if match:
                figures["first KVM_RUN (s)"] = float(match.group(1)) - c.started
    finally:
        c.close()

    c = Console([*base, *binary, str(guest_dir / "mmio_loop.elf")])
    try:
        c.wait_for(b"mmio loop: start")
        begin = time.monotonic()
        c.wait_for(b"mmio loop: done")
        figures["MMIO exit (us)"] = (time.monotonic() - begin) / MMIO_READS * 1e6
    finally:
        c.close()

    linux = (
        ["--kernel", str(kernel), "--initrd", str(initrd)]
        if vmm == "elvisor"
        else ["-kernel", str(kernel), "-initrd", str(initrd)]
    )
    cmdline = "console=ttyAMA0 quiet"
    c = Console([*base, *linux, "--cmdline" if vmm == "elvisor" else "-append", cmdline])
    try:
        figures["boot to init (s)"] = c.wait_for(INIT_MARKER)
        c.wait_for(b"~ # ")
        figures["VMM memory (MiB)"] = c.rss_without_guest_ram_mib()
    finally:
        c.close()
    return figures


def inside(args: argparse.Namespace) -> None:
    from elvisor.images import default_guest

    guest = default_guest()
    guests = ROOT / "build" / "guests"
    runs: dict[str, list[dict]] = {"elvisor": [], "QEMU": []}
    for _ in range(args.runs):
        runs["elvisor"].append(
            measure("elvisor", elvisor_command(), guests, guest.kernel, guest.initrd)
        )
        runs["QEMU"].append(
            measure("QEMU", qemu_command(Path(args.qemu_root)), guests, guest.kernel, guest.initrd)
        )
    medians = {
        vmm: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for vmm, rs in runs.items()
    }
    print(
        f"\nelvisor vs QEMU with KVM, median of {args.runs} runs "
        f"({platform.machine()}, Linux {os.uname().release}, host pages "
        f"{os.sysconf('SC_PAGE_SIZE') // 1024} KiB)"
    )
    print(f"{'':<20}{'elvisor':>12}{'QEMU':>12}{'ratio':>10}")
    for key in ["start-up (s)", "boot to init (s)", "MMIO exit (us)", "VMM memory (MiB)"]:
        ours, theirs = medians["elvisor"][key], medians["QEMU"][key]
        print(f"{key:<20}{ours:>12.3f}{theirs:>12.3f}{ours / theirs:>9.2f}x")
    if (first := medians["elvisor"].get("first KVM_RUN (s)")) is not None:
        print(f"elvisor: process start -> first KVM_RUN {first:.3f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", default="max")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--qemu-root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args)
        return 0
    from elvisor.images import default_guest

    qemu_root = prepare_qemu()
    default_guest()
    subprocess.run(["make", "-s", "guests"], cwd=ROOT, check=True)
    return subprocess.call(
        [
            sys.executable,
            "-m",
            "elvisor",
            "lab",
            "run",
            "--profile",
            args.profile,
            "--",
            "python3",
            "benchmarks/vmm.py",
            "--inside",
            "--runs",
            str(args.runs),
            "--qemu-root",
            str(qemu_root),
        ],
        cwd=ROOT,
    )


if __name__ == "__main__":
    sys.exit(main())
