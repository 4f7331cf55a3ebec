"""The `elvisor` command: a thin layer over the Python API.

Exit statuses: 0 success; 2 bad input or unusable host (one line, no traceback);
`lab run` passes its command's status through, 124 on timeout, 130/143 on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

from elvisor import __version__
from elvisor.config import CONSOLES, DEFAULT_CMDLINE, VmConfig
from elvisor.errors import UserError
from elvisor.files import write_file
from elvisor.units import parse_size

log = logging.getLogger("elvisor")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line like every other user error."""

    def error(self, message: str) -> NoReturn:
        print(f"elvisor: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _lab_options(parser: argparse.ArgumentParser) -> None:
    from elvisor.lab.image import DEFAULT_SUITE, SUITES
    from elvisor.lab.profiles import CPUS, DEFAULT_PROFILE, PROFILES

    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        choices=list(PROFILES),
        help="host profile to emulate (default: %(default)s)",
    )
    parser.add_argument(
        "--suite",
        default=DEFAULT_SUITE,
        choices=SUITES,
        help="Debian release of the lab host (default: %(default)s)",
    )
    parser.add_argument("--cpu", choices=CPUS, help="override the profile's CPU model")
    parser.add_argument("--gic", type=int, choices=(2, 3), help="override the profile's GIC")
    parser.add_argument("--cpus", type=int, default=2, help="lab CPUs (default: %(default)s)")
    parser.add_argument("--memory", default="2G", help="lab memory (default: %(default)s)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds before the lab is stopped, exit 124 (default: %(default)g; 0: no limit)",
    )
    parser.add_argument("--mirror", help="Debian mirror URI (default: the system's apt source)")
    parser.add_argument(
        "--disk",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a raw image as a virtio disk of the lab (/dev/vda, /dev/vdb, ...)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show the lab's boot log and timings"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="elvisor", description="A hackable hypervisor for ARMv8-A (AArch64).")
    parser.add_argument("--version", action="version", version=f"elvisor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kvm = commands.add_parser("kvm", help="KVM on this host")
    kvm_commands = kvm.add_subparsers(dest="kvm_command", required=True, metavar="COMMAND")
    info = kvm_commands.add_parser("info", help="KVM API version and arm64 capabilities")
    info.add_argument("--json", action="store_true", help="machine-readable output")

    run = commands.add_parser("run", help="boot a guest (default: the default Linux guest)")
    run.add_argument("--kernel", type=Path, help="arm64 Linux Image (plain or gzip) or ELF file")
    run.add_argument("--initrd", type=Path, help="initial RAM disk")
    run.add_argument("--cmdline", help=f"kernel command line (default: {DEFAULT_CMDLINE!r})")
    run.add_argument("--memory", default="512M", help="guest RAM (default: %(default)s)")
    run.add_argument("--cpus", type=int, default=1, help="vCPUs (default: %(default)s)")
    run.add_argument("--gic", type=int, choices=(2, 3), help="GIC version (default: v3 if any)")
    run.add_argument("--binary", type=Path, help="bare-metal program: ELF, or raw")
    run.add_argument(
        "--load-addr", type=_address, help="where a raw --binary goes (default: 512 KiB into RAM)"
    )
    run.add_argument(
        "--dump-dtb",
        type=Path,
        metavar="FILE",
        help="write the guest's device tree to FILE and exit",
    )
    run.add_argument("--no-reboot", action="store_true", help="exit when the guest resets")
    run.add_argument("--pmu", action="store_true", help="give the guest a PMU v3 (perf events)")
    run.add_argument(
        "--disk",
        action="append",
        default=[],
        metavar="PATH[,ro]",
        help="a raw disk image as a virtio-blk disk (again for more: vda, vdb, ...)",
    )
    run.add_argument(
        "--console",
        choices=CONSOLES,
        default="serial",
        help="the guest's console: serial (PL011, ttyAMA0) or virtio (hvc0)",
    )
    run.add_argument(
        "--net",
        action="append",
        default=[],
        metavar="user|tap=NAME[,mac=MAC][,vhost=on|off]",
        help="a virtio-net port: user-mode networking through passt (no root), or a TAP device "
        "(with the kernel's vhost-net where /dev/vhost-net works)",
    )
    run.add_argument(
        "--vsock",
        metavar="cid=N",
        help="a virtio-vsock device (vhost-vsock): host programs reach the guest at AF_VSOCK "
        "address N",
    )
    run.add_argument("--no-rng", action="store_true", help="no virtio entropy device")
    run.add_argument("-v", "--verbose", action="store_true", help="timings and device logs")

    baremetal = commands.add_parser(
        "baremetal", help="the EL2 hypervisor in C, with VMs described as for run"
    )
    baremetal_commands = baremetal.add_subparsers(
        dest="baremetal_command", required=True, metavar="COMMAND"
    )
    bm_build = baremetal_commands.add_parser("build", help="build a bootable image")
    bm_build.add_argument("-o", "--output", type=Path, required=True, help="the image to write")
    bm_build.add_argument(
        "--platform", choices=("qemu-virt", "rpi4"), default="qemu-virt",
        help="the board (default: %(default)s; rpi4: kernel8.img, untested on hardware)",
    )  # fmt: skip
    bm_run = baremetal_commands.add_parser("run", help="build an image and boot it under QEMU")
    bm_run.add_argument("--cpu", default="max", help="QEMU's CPU model (default: %(default)s)")
    bm_run.add_argument("--gdb", action="store_true", help="wait for gdb-multiarch on :1234")
    for sub in (bm_build, bm_run):
        sub.add_argument("--gic", type=int, choices=(2, 3), default=3, help="GIC version")
        sub.add_argument("--kernel", type=Path, help="arm64 Linux Image or ELF (one VM)")
        sub.add_argument("--initrd", type=Path, help="initial RAM disk")
        sub.add_argument("--cmdline", help=f"kernel command line (default: {DEFAULT_CMDLINE!r})")
        sub.add_argument("--binary", type=Path, help="bare-metal program (raw: 512 KiB into RAM)")
        sub.add_argument("--memory", default="256M", help="the VM's RAM (default: %(default)s)")
        sub.add_argument("--cpus", type=int, default=1, help="its vCPUs, one CPU each")
        sub.add_argument("--vms", type=Path, metavar="FILE.toml",
                         help="several VMs, statically partitioned: [[vm]] tables with the "
                         "keys above")  # fmt: skip

    rootfs = commands.add_parser(
        "rootfs", help="an ext4 root filesystem of the default guest, for --disk and root="
    )
    rootfs.add_argument("path", type=Path, help="the image file to create")
    rootfs.add_argument("--size", default="64M", help="its size (default: %(default)s)")

    doctor = commands.add_parser("doctor", help="can this host run elvisor guests?")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")

    lab = commands.add_parser("lab", help="an emulated arm64 host with KVM, for any machine")
    lab_commands = lab.add_subparsers(dest="lab_command", required=True, metavar="COMMAND")
    build = lab_commands.add_parser("build", help="build (or refresh) the lab from Debian")
    build.add_argument("--suite", default=None, help="Debian release (default: trixie)")
    build.add_argument("--profile", default="max", help="host profile whose kernel to build")
    build.add_argument("--mirror", help="Debian mirror URI (default: the system's apt source)")
    build.add_argument("--refresh", action="store_true", help="fetch Debian's lists anew")
    run = lab_commands.add_parser("run", help="run a command inside the lab")
    _lab_options(run)
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    shell = lab_commands.add_parser("shell", help="an interactive shell inside the lab")
    _lab_options(shell)
    return parser


def _cmd_lab(args: argparse.Namespace, started: float) -> int:
    from elvisor.images import default_guest
    from elvisor.lab import session
    from elvisor.lab.build import ensure_image
    from elvisor.lab.image import DEFAULT_SUITE
    from elvisor.lab.profiles import lab_machine

    if args.lab_command == "build":
        machine = lab_machine(args.profile)
        image = ensure_image(
            args.suite or DEFAULT_SUITE, machine.flavour, args.mirror, args.refresh, rebuild=True
        )
        print(f"{image.kernel}\n{image.initrd}")
        return 0
    if args.lab_command == "shell":
        if not sys.stdin.isatty():
            raise UserError("lab shell needs a terminal: use `elvisor lab run -- CMD` instead")
        argv = ["sh", "-l"]
    else:
        argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not argv:
            raise UserError("lab run needs a command: elvisor lab run -- CMD [ARGS...]")
    memory = parse_size(args.memory, default_unit="M")
    machine = lab_machine(args.profile, args.cpu, args.gic, args.cpus, memory >> 20)
    request = session.LabRequest(
        argv=argv,
        machine=machine,
        timeout=args.timeout or None,
        verbose=args.verbose,
        disks=tuple(_lab_disk(d) for d in args.disk),
    )
    if session.native_kvm():
        return session.run(request, None, started)
    lab_image = ensure_image(args.suite, machine.flavour, args.mirror)
    default_guest()  # built here, where apt is, for `elvisor run` inside the lab
    return session.run(request, lab_image, started)


def _lab_disk(path: Path) -> Path:
    if not path.is_file() or not os.access(path, os.R_OK | os.W_OK):
        raise UserError(f"--disk {path}: give a raw image file you can read and write")
    return path.resolve()


def _address(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address (like 0x40080000)") from None


def _cmd_run(args: argparse.Namespace, started: float) -> int:
    from elvisor.config import DiskConfig, NetConfig, boot_files, parse_vsock
    from elvisor.vm import Outcome, Vm, run_vm

    kernel, initrd, cmdline = boot_files(args.kernel, args.initrd, args.binary)
    if args.console == "virtio":
        cmdline = cmdline.replace("console=ttyAMA0", "console=hvc0")
    config = VmConfig(
        kernel=kernel,
        initrd=initrd,
        cmdline=args.cmdline if args.cmdline is not None else cmdline,
        memory=parse_size(args.memory, default_unit="M"),
        cpus=args.cpus,
        gic=args.gic,
        binary=args.binary,
        load_addr=args.load_addr,
        reboot=not args.no_reboot,
        pmu=args.pmu,
        console=args.console,
        disks=tuple(DiskConfig.parse(d) for d in args.disk),
        rng=not args.no_rng,
        nets=tuple(NetConfig.parse(n) for n in args.net),
        vsock_cid=parse_vsock(args.vsock) if args.vsock is not None else None,
    )
    if args.dump_dtb:
        with Vm(config) as vm:
            write_file(args.dump_dtb, vm.dtb_blob, "device tree")
        return 0

    def timings(vm: Vm) -> None:
        if args.verbose:
            vm.on_first_run = lambda t: log.info(
                "first KVM_RUN %.3f s after start (monotonic clock %.6f)", t - started, t
            )

    result = run_vm(config, on_start=timings)
    if result.message and (args.verbose or result.outcome not in (Outcome.POWEROFF, Outcome.RESET)):
        print(f"elvisor: {result.message}", file=sys.stderr)
    return result.exit_status


def _baremetal_vms(args: argparse.Namespace) -> list[VmConfig]:
    from elvisor.config import boot_files, load_vms

    if args.vms is not None:
        return load_vms(args.vms)
    kernel, initrd, cmdline = boot_files(args.kernel, args.initrd, args.binary)
    return [
        VmConfig(
            kernel=kernel,
            initrd=initrd,
            cmdline=args.cmdline if args.cmdline is not None else cmdline,
            memory=parse_size(args.memory, default_unit="M"),
            cpus=args.cpus,
            binary=args.binary,
        )
    ]


def _cmd_baremetal(args: argparse.Namespace) -> int:
    from elvisor.baremetal import build, qemu

    platform = build.PLATFORMS[getattr(args, "platform", "qemu-virt")]
    vms = _baremetal_vms(args)
    image = build.build(vms, platform, 2 if platform.name == "rpi4" else args.gic)
    if args.baremetal_command == "build":
        write_file(args.output, image.data, "image")
        print(f"{args.output}: {len(image.data)} bytes, needs {image.memory >> 20} MiB of RAM")
        return 0
    # QEMU takes this process's place (signals and exit status are its own, nothing is left
    # behind) and reads the image from a memory file it inherits: no temporary file
    fd = os.memfd_create("elvisor-el2.img", 0)
    os.write(fd, image.data)
    argv = qemu.command(Path(f"/proc/self/fd/{fd}"), memory=image.memory,
                        cpus=sum(v.cpus for v in vms), gic_version=args.gic, cpu=args.cpu,
                        gdb=args.gdb)  # fmt: skip
    if args.gdb:
        elf = build.BUILD / platform.name / "elvisor-el2.elf"
        print(f"elvisor: QEMU waits for gdb: gdb-multiarch {elf} -ex 'target remote :1234'",
              file=sys.stderr, flush=True)  # fmt: skip
    elif sys.stdin.isatty():
        print("elvisor: Ctrl-A x quits; Ctrl-\\ passes the console to the next VM",
              file=sys.stderr, flush=True)  # fmt: skip
    sys.stdout.flush()
    os.execv(argv[0], argv)


def _cmd_rootfs(args: argparse.Namespace) -> int:
    from elvisor.images import default_guest
    from elvisor.images.rootfs import build_rootfs

    build_rootfs(default_guest(), args.path, parse_size(args.size, default_unit="M"))
    print(f"{args.path}: boot it with elvisor run --disk {args.path} --cmdline root=/dev/vda")
    return 0


def _cmd_kvm_info(args: argparse.Namespace) -> int:
    from elvisor.kvm import probe

    report = probe.probe()
    print(probe.to_json(report) if args.json else probe.format_info(report))
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from elvisor.kvm import probe

    report = probe.probe()
    verdict = probe.diagnose(report)
    print(probe.to_json(verdict) if args.json else probe.format_verdict(verdict))
    return 0 if verdict.can_run else 1


class _TerminalSafeHandler(logging.StreamHandler):
    """Log lines end in CR LF on a terminal, which may be in raw mode for a guest console."""

    terminator = "\r\n" if sys.stderr.isatty() else "\n"


def _setup_logging(verbose: bool) -> None:
    handler = _TerminalSafeHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("elvisor: %(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    try:
        if args.command == "lab":
            return _cmd_lab(args, started)
        if args.command == "run":
            _setup_logging(args.verbose)
            return _cmd_run(args, started)
        if args.command == "kvm":
            return _cmd_kvm_info(args)
        if args.command == "baremetal":
            return _cmd_baremetal(args)
        if args.command == "rootfs":
            return _cmd_rootfs(args)
        return _cmd_doctor(args)
    except UserError as e:
        print(f"elvisor: error: {e}", file=sys.stderr)
        return e.exit_status
