#!/usr/bin/env python3
"""virtio-blk and virtio-net throughput: elvisor against QEMU (with KVM), and the lab host.

    python3 benchmarks/virtio.py [--runs N] [--profile P] [--seconds S]

The same default guest, with the same two disks (a 128 MiB raw image in the lab host's
/tmp, and an ext4 disk with the guest's tools) and a TAP port on the lab host, boots under
elvisor and under QEMU's arm64 build from Debian (virtio-*-device: virtio-mmio, as elvisor;
`vhost=on` for its network). In the guest:

  blk read/write  sequential, 1 MiB requests, O_DIRECT on the raw disk (tests/guests/linux/
                  blkbench.c), MiB/s; the write ends with fdatasync
  blk randread    4 KiB requests at random offsets, O_DIRECT: requests per second
  net             iperf3 (Debian's arm64 build) guest -> lab host over the TAP, Mbit/s;
                  elvisor with vhost-net, and with its Python data plane (vhost=off)

blkbench also runs on the lab host itself, on the same image file: elvisor's figures are
printed as ratios to QEMU's and to the host's own. Medians of N runs, all measured in this
one run. In the lab every figure is nested and software-emulated: compare the ratios.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vmm import GUEST_RAM_MIB, ROOT, Console, prepare_qemu, qemu_command

GUESTS = ROOT / "build" / "guests" / "linux"
WORK = Path("/tmp/elvisor-bench")
IMAGE_MIB = 128
TAP, HOST_IP, GUEST_IP = "elbench0", "192.168.99.1", "192.168.99.2"
# iperf3 and the libraries it loads (not what installing it would pull in: debconf, PAM, ...)
IPERF_PACKAGES = ["iperf3", "libiperf0", "libsctp1", "libssl3t64", "libc6", "libgcc-s1", "zlib1g",
                  "libzstd1"]  # fmt: skip
BLK_MODES = ["read", "write", "randread"]
PROMPT = rb"~ # "


def prepare_iperf3() -> Path:
    """iperf3's arm64 build and its libraries, unpacked from Debian's packages (on the host)."""
    from elvisor.cache import cache_dir, locked
    from elvisor.debian.apt import debian_workspace, extract

    apt = debian_workspace(cache_dir() / "apt" / "trixie", "trixie")
    packages = [p for p in apt.resolve(["iperf3"]) if p.name in IPERF_PACKAGES]
    versions = hashlib.sha256(" ".join(map(str, packages)).encode()).hexdigest()[:12]
    root = cache_dir() / "bench" / f"iperf3-{versions}"
    with locked(cache_dir() / "bench" / ".lock"):
        if not (root / ".complete").exists():
            for deb in apt.download(packages, cache_dir() / "debs" / "trixie"):
                extract(deb, root)
            for merged in ("lib", "bin"):  # usrmerge's links, for the ELF interpreter's path
                if not (root / merged).exists():
                    (root / merged).symlink_to(f"usr/{merged}")
            (root / ".complete").touch()
    return root


def iperf3_command(root: Path) -> list[str]:
    """iperf3 from `root` on the lab host, through its own dynamic loader and libraries."""
    return [
        str(root / "usr/lib/ld-linux-aarch64.so.1"),
        "--library-path",
        str(root / "usr/lib/aarch64-linux-gnu"),
        str(root / "usr/bin/iperf3"),
    ]


# --- the lab host's side -------------------------------------------------------------------


@contextmanager
def tap_device() -> Iterator[None]:
    """A persistent TAP on the lab host with HOST_IP, for one VMM after the other."""
    tunsetiff, tunsetpersist, flags = 0x400454CA, 0x400454CB, 0x0002 | 0x1000  # TAP, NO_PI

    def persist(on: int) -> None:
        fd = os.open("/dev/net/tun", os.O_RDWR)
        try:
            fcntl.ioctl(fd, tunsetiff, struct.pack("16sH22x", TAP.encode(), flags))
            fcntl.ioctl(fd, tunsetpersist, on)
        finally:
            os.close(fd)

    persist(1)
    subprocess.run(["ip", "addr", "add", f"{HOST_IP}/24", "dev", TAP], check=True)
    subprocess.run(["ip", "link", "set", TAP, "up"], check=True)
    try:
        yield
    finally:
        persist(0)


def make_disks(iperf_root: Path) -> tuple[Path, Path]:
    """The raw disk the guest measures, and an ext4 disk with its tools (and iperf3)."""
    WORK.mkdir(exist_ok=True)
    image = WORK / "bench.img"
    with image.open("wb") as f:
        for _ in range(IMAGE_MIB):
            f.write(os.urandom(1 << 20))
    tree = WORK / "tools"
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(iperf_root, tree, symlinks=True)
    for name in ("tmp", "dev", "proc"):
        (tree / name).mkdir(exist_ok=True)
    shutil.copy(GUESTS / "blkbench", tree / "blkbench")
    tools = WORK / "tools.ext4"
    tools.unlink(missing_ok=True)
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(tools), "96M"], check=True)
    return image, tools


def blkbench_line(output: bytes, mode: str) -> dict[str, float]:
    pattern = rb"blkbench %s: (\d+) bytes, (\d+) requests, (\d+) ns" % mode.encode()
    match = re.search(pattern, output)
    if not match:
        raise RuntimeError(f"blkbench {mode}: {output[-300:]!r}")
    size, requests, ns = (int(g) for g in match.groups())
    if mode == "randread":
        return {f"blk {mode} (IOPS)": requests / (ns / 1e9)}
    return {f"blk {mode} (MiB/s)": size / (1 << 20) / (ns / 1e9)}


def host_blk(image: Path, seconds: int) -> dict[str, float]:
    """blkbench on the lab host, on the image file itself (cached, as the VMMs read it)."""
    figures: dict[str, float] = {}
    for mode in BLK_MODES:
        out = subprocess.run([str(GUESTS / "blkbench"), str(image), mode, str(seconds)],
                             capture_output=True, check=True).stdout  # fmt: skip
        figures.update(blkbench_line(out, mode))
    return figures


# --- in the guest ----------------------------------------------------------------------------


def measure(vmm: list[str], iperf: list[str], seconds: int) -> dict[str, float]:
    """Boot `vmm`, run blkbench and iperf3 in the guest; its figures."""
    figures: dict[str, float] = {}
    guest = Console(vmm)
    try:
        guest.expect(PROMPT)
        guest.send("killall udhcpc 2>/dev/null; for d in /sys/block/vd*; do "
                   'echo "disk $(cat $d/serial)=${d##*/}"; done; echo disks-listed')  # fmt: skip
        listed = guest.expect(rb"\ndisks-listed").end()
        disks = dict(re.findall(rb"\ndisk (\S+)=(vd[a-z]+)", guest.output[:listed]))
        bench, tools = disks[b"bench.img"].decode(), disks[b"tools.ext4"].decode()
        guest.send(f"mkdir -p /mnt && mount /dev/{tools} /mnt && mount -t devtmpfs dev /mnt/dev"
                   f" && mount -t proc proc /mnt/proc && echo tools-mounted")  # fmt: skip
        after = guest.expect(rb"\ntools-mounted").end()
        for mode in BLK_MODES:
            guest.send(f"/mnt/blkbench /dev/{bench} {mode} {seconds} direct")
            match = guest.expect(rb"blkbench %s: [^\n]*\n" % mode.encode(), after)
            figures.update(blkbench_line(match.group(0), mode))
            after = match.end()

        server = subprocess.Popen([*iperf, "-s", "-1", "-J", "-B", HOST_IP],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            guest.send(f"ip addr add {GUEST_IP}/24 dev eth0 && ip link set eth0 up && sleep 1 && "
                       f"chroot /mnt /usr/bin/iperf3 -c {HOST_IP} -t {seconds} >/dev/null;"
                       " echo iperf3-status=$?")  # fmt: skip
            status = guest.expect(rb"iperf3-status=(\d+)", after).group(1)
            out, err = server.communicate(timeout=60)
        finally:
            server.kill()
            server.wait()
        if status != b"0":
            raise RuntimeError(f"iperf3 in the guest failed: {guest.output[-500:]!r} {err!r}")
        received = json.loads(out)["end"]["sum_received"]["bits_per_second"]
        figures["net guest->host (Mbit/s)"] = received / 1e6
        guest.send("umount /mnt/proc /mnt/dev /mnt; poweroff")
        guest.proc.wait(120)
    finally:
        guest.close()
    return figures


def inside(args: argparse.Namespace) -> None:
    from elvisor.images import default_guest

    default = default_guest()
    iperf_root = Path(args.iperf_root)
    image, tools = make_disks(iperf_root)
    iperf = iperf3_command(iperf_root)
    linux = ["--kernel", str(default.kernel), "--initrd", str(default.initrd)]
    elvisor = [sys.executable, "-m", "elvisor", "run", "--memory", f"{GUEST_RAM_MIB}M", *linux,
               "--disk", str(tools), "--disk", str(image)]  # fmt: skip
    qemu = [
        *qemu_command(Path(args.qemu_root)),
        "-kernel", str(default.kernel), "-initrd", str(default.initrd),
        "-append", "console=ttyAMA0 quiet",
        "-drive", f"file={tools},if=none,format=raw,id=tools",
        "-device", "virtio-blk-device,drive=tools,serial=tools.ext4",
        "-drive", f"file={image},if=none,format=raw,id=bench",
        "-device", "virtio-blk-device,drive=bench,serial=bench.img",
        "-netdev", f"tap,id=net,ifname={TAP},script=no,downscript=no,vhost=on",
        "-device", "virtio-net-device,netdev=net",
    ]  # fmt: skip
    vmms = {
        "elvisor": [*elvisor, "--net", f"tap={TAP},vhost=on"],
        "QEMU": qemu,
        "elvisor, Python net": [*elvisor, "--net", f"tap={TAP},vhost=off"],
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in [*vmms, "lab host"]}
    with tap_device():
        for _ in range(args.runs):
            runs["lab host"].append(host_blk(image, args.seconds))
            for name, command in vmms.items():
                runs[name].append(measure(command, iperf, args.seconds))
    shutil.rmtree(WORK, ignore_errors=True)

    medians = {
        name: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        for name, rs in runs.items()
    }
    print(
        f"\nvirtio: elvisor vs QEMU with KVM and the lab host, median of {args.runs} runs of "
        f"{args.seconds} s ({platform.machine()}, Linux {os.uname().release})"
    )
    print(f"{'':<26}{'elvisor':>10}{'QEMU':>10}{'ratio':>8}{'lab host':>10}{'of host':>9}")
    ours, qemu_figures, host = medians["elvisor"], medians["QEMU"], medians["lab host"]
    for key in ours:
        line = f"{key:<26}{ours[key]:>10.1f}{qemu_figures[key]:>10.1f}"
        line += f"{ours[key] / qemu_figures[key]:>7.2f}x"
        if key in host:
            line += f"{host[key]:>10.1f}{ours[key] / host[key]:>8.0%}"
        print(line)
    python = medians["elvisor, Python net"]["net guest->host (Mbit/s)"]
    key = "net guest->host (Mbit/s)"
    print(f"{'net, Python data plane':<26}{python:>10.1f}{qemu_figures[key]:>10.1f}"
          f"{python / qemu_figures[key]:>7.2f}x")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3, choices=range(1, 10))
    parser.add_argument("--profile", default="max")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--qemu-root", help=argparse.SUPPRESS)
    parser.add_argument("--iperf-root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args)
        return 0
    from elvisor.images import default_guest

    qemu_root, iperf_root = prepare_qemu(), prepare_iperf3()
    default_guest()
    subprocess.run(["make", "-s", "guests"], cwd=ROOT, check=True)
    return subprocess.call(
        [sys.executable, "-m", "elvisor", "lab", "run", "--profile", args.profile, "--",
         "python3", "benchmarks/virtio.py", "--inside", "--runs", str(args.runs),
         "--seconds", str(args.seconds), "--qemu-root", str(qemu_root),
         "--iperf-root", str(iperf_root)],
        cwd=ROOT,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
