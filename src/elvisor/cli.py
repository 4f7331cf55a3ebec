"""The `elvisor` command: a thin layer over the Python API.

Exit statuses: 0 success; 2 bad input or unusable host (one line, no traceback);
`lab run` passes its command's status through, 124 on timeout, 130/143 on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

import elvisor.log
from elvisor import __version__
from elvisor.config import CONSOLES, DEFAULT_CMDLINE, VmConfig
from elvisor.errors import UserError
from elvisor.files import open_text, write_file
from elvisor.log import Log
from elvisor.units import parse_size

if TYPE_CHECKING:
    from elvisor.api.control import Api
    from elvisor.api.instance import Instance
    from elvisor.exits import RunResult
    from elvisor.trace import ExitWatch

log = Log("elvisor")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line like every other user error."""

    def error(self, message: str) -> NoReturn:
        print(f"elvisor: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


# Firecracker options elvisor takes and does nothing with (the jailer's timing options; there
# is no seccomp filter to set), with whether each takes a value
MAX_JSON = 1 << 20  # bytes of a Firecracker configuration file
IGNORED_FIRECRACKER_OPTIONS = {
    "--start-time-us": True,
    "--start-time-cpu-us": True,
    "--parent-cpu-time-us": True,
    "--seccomp-level": True,
    "--seccomp-filter": True,
    "--no-seccomp": False,
    "--http-api-max-payload-size": True,
    "--mmds-size-limit": True,
}


def _lab_options(parser: argparse.ArgumentParser) -> None:
    from elvisor.lab.profiles import CPUS, DEFAULT_PROFILE, DEFAULT_SUITE, PROFILES, SUITES

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
    run.add_argument("--config", type=Path, metavar="FILE.toml",
                     help="the VM described in a file: these options as keys (the command "
                     "line wins)")  # fmt: skip
    run.add_argument("--config-file", type=Path, metavar="FILE.json",
                     help="the VM described in Firecracker's JSON configuration")  # fmt: skip
    run.add_argument("--kernel", help="arm64 Linux Image (plain or gzip) or ELF file")
    run.add_argument("--initrd", help="initial RAM disk")
    run.add_argument("--cmdline", help=f"kernel command line (default: {DEFAULT_CMDLINE!r})")
    run.add_argument("--memory", help="guest RAM (default: 512M)")
    run.add_argument("--cpus", type=int, help="vCPUs (default: 1)")
    run.add_argument("--gic", type=int, choices=(2, 3), help="GIC version (default: v3 if any)")
    run.add_argument("--binary", help="bare-metal program: ELF, or raw")
    run.add_argument(
        "--load-addr", type=_address, help="where a raw --binary goes (default: 512 KiB into RAM)"
    )
    run.add_argument(
        "--dump-dtb",
        type=Path,
        metavar="FILE",
        help="write the guest's device tree to FILE and exit",
    )
    run.add_argument("--no-reboot", action="store_const", const=False, dest="reboot",
                     help="exit when the guest resets")  # fmt: skip
    run.add_argument("--pmu", action="store_const", const=True,
                     help="give the guest a PMU v3 (perf events)")  # fmt: skip
    run.add_argument(
        "--disk",
        action="append",
        metavar="PATH[,ro]",
        help="a raw disk image as a virtio-blk disk (again for more: vda, vdb, ...)",
    )
    run.add_argument(
        "--device",
        action="append",
        metavar="MODULE:CLASS[,KEY=VALUE]...",
        help="a device of your own, in Python, on the guest's MMIO bus (module:Class or "
        "file.py:Class; see elvisor.devices.python)",
    )
    run.add_argument(
        "--console",
        choices=CONSOLES,
        help="the guest's console: serial (PL011, ttyAMA0; the default) or virtio (hvc0)",
    )
    run.add_argument(
        "--net",
        action="append",
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
    run.add_argument("--no-rng", action="store_const", const=False, dest="rng",
                     help="no virtio entropy device")  # fmt: skip
    run.add_argument(
        "--api-sock",
        type=Path,
        metavar="PATH",
        help="serve the control API (Firecracker's) on this Unix socket",
    )
    run.add_argument(
        "--restore",
        type=Path,
        metavar="DIR",
        help="go on with the VM of the snapshot in DIR (from elvisor ctl SOCKET snapshot DIR)",
    )
    run.add_argument(
        "--trace",
        choices=["exits"],
        help="print every exit from the guest as it happens (vCPU, reason, device register, value)",
    )
    run.add_argument("--trace-file", type=Path, metavar="FILE", help="the trace goes here")
    run.add_argument(
        "--stats",
        action="store_true",
        help="at the end, a table of exits by reason and by device register, with time spent",
    )
    run.add_argument(
        "--gdb",
        metavar="[HOST:]PORT",
        help="serve gdb's remote protocol on this TCP port (host 127.0.0.1 unless given)",
    )
    run.add_argument(
        "--gdb-wait", action="store_true", help="with --gdb: the guest waits for gdb to continue"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="timings and device logs")

    firecracker = commands.add_parser(
        "firecracker", help="Firecracker's command line: elvisor in firecracker's place"
    )
    firecracker.add_argument(
        "--api-sock",
        type=Path,
        default=Path("/run/firecracker.socket"),
        help="the API's Unix socket (default: %(default)s)",
    )
    firecracker.add_argument(
        "--config-file",
        type=Path,
        metavar="FILE.json",
        help="Firecracker's JSON configuration: boot it at once",
    )
    firecracker.add_argument(
        "--no-api", action="store_true", help="no API socket (needs --config-file)"
    )
    firecracker.add_argument("--id", default="anonymous-instance", help="the microVM's id")
    firecracker.add_argument("--level", help="log level: Error, Warning, Info, Debug, Trace, Off")
    firecracker.add_argument("--log-path", help="the log's file or named pipe")
    firecracker.add_argument("--show-level", action="store_true", help="log lines show the level")
    firecracker.add_argument(
        "--show-log-origin", action="store_true", help="log lines show the source file and line"
    )
    firecracker.add_argument("--metrics-path", type=Path, help="the metrics' file or named pipe")
    firecracker.add_argument(
        "--boot-timer",
        action="store_true",
        help="print the time from the start to the guest's first instruction",
    )
    for ignored, takes_value in IGNORED_FIRECRACKER_OPTIONS.items():
        action = "store" if takes_value else "store_true"
        firecracker.add_argument(ignored, action=action, help=argparse.SUPPRESS)

    ctl = commands.add_parser("ctl", help="drive a VM through its API socket")
    ctl.add_argument("socket", type=Path, help="the VM's --api-sock")
    ctl_commands = ctl.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")
    ctl_commands.add_parser("status", help="the VM's id, state and elvisor version")
    ctl_commands.add_parser("pause", help="pause the VM")
    ctl_commands.add_parser("resume", help="resume the paused VM")
    ctl_commands.add_parser("stop", help="stop the VM (its process ends)")
    snapshot = ctl_commands.add_parser(
        "snapshot", help="write a snapshot of the VM into DIR (paused meanwhile)"
    )
    snapshot.add_argument("dir", type=Path, help="where: DIR/state.json and DIR/memory")

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
    from elvisor.lab.profiles import DEFAULT_SUITE, lab_machine

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


def _given(args: argparse.Namespace, keys: Iterable[str]) -> dict[str, object]:
    """The options among `keys` the command line gave: settings, as a file's would be."""
    values = {key: getattr(args, key) for key in keys}
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items() if v is not None}


def _load_firecracker_config(api: Api, path: Path) -> dict[str, object]:
    """Firecracker's JSON configuration file, applied to `api` (its logger and metrics
    too); the VM's settings. One line naming the file when it is wrong."""
    import json

    from elvisor.api.firecracker import BadRequest
    from elvisor.files import read_file

    try:
        api.load(json.loads(read_file(path, "configuration file", MAX_JSON)))
        return api.resources.settings()
    except (BadRequest, ValueError) as e:
        raise UserError(f"{path}: {e}") from None


def _run_config(args: argparse.Namespace, api: Api | None) -> VmConfig:
    """The VM of `elvisor run`: the --config (or --config-file) file's settings, the command
    line's over them."""
    from elvisor.config import SETTING_TYPES, load_vm, vm_from_settings

    given = _given(args, SETTING_TYPES)
    if args.config is not None and args.config_file is not None:
        raise UserError("--config or --config-file: one file describes the VM")
    file = args.config or args.config_file
    if file is None:
        return vm_from_settings(given)
    if args.config:
        settings = load_vm(file)
    else:
        assert api is not None
        settings = _load_firecracker_config(api, file)
    try:
        return vm_from_settings(settings | given)
    except UserError as e:
        raise UserError(f"{file}: {e}") from None


def _cmd_run(args: argparse.Namespace, started: float) -> int:
    from elvisor.api.instance import Instance

    instance = Instance()
    if args.gdb_wait and not args.gdb:
        raise UserError("--gdb-wait waits for gdb on the --gdb port: add --gdb PORT")
    if args.gdb:
        from elvisor.gdb.server import parse_address

        if args.restore or args.api_sock:
            raise UserError(
                "--gdb debugs a VM that `elvisor run` boots: drop --restore and --api-sock"
            )
        instance.gdb = (parse_address(args.gdb), args.gdb_wait)
    with contextlib.ExitStack() as stack:
        if args.trace or args.stats or args.trace_file:
            instance.watch = _exit_watch(args, stack)
        status = _run_instance(args, started, instance)
        if instance.watch is not None and args.stats:
            print(instance.watch.table(), file=sys.stderr)
        return status


def _exit_watch(args: argparse.Namespace, stack: contextlib.ExitStack) -> ExitWatch:
    """--trace exits, --trace-file and --stats."""
    from elvisor.trace import ExitWatch

    if args.trace_file and not args.trace:
        raise UserError("--trace-file is where --trace exits writes: add --trace exits")
    trace: TextIO | None = sys.stderr if args.trace else None
    if args.trace_file:
        trace = stack.enter_context(open_text(args.trace_file, "trace file"))
    return ExitWatch(trace, args.stats)


def _run_instance(args: argparse.Namespace, started: float, instance: Instance) -> int:
    if args.verbose:
        instance.on_first_run = lambda t: log.info(
            "first KVM_RUN %.3f s after start (monotonic clock %.6f)", t - started, t
        )
    api = None
    if args.api_sock is not None or args.config_file is not None:
        from elvisor.api.control import Api

        api = Api(instance)
    start: Callable[[Instance], None]
    if args.restore is not None:
        from elvisor.config import SETTING_TYPES
        from elvisor.snapshot import Files

        if args.config or args.config_file or _given(args, SETTING_TYPES) or args.dump_dtb:
            raise UserError("--restore takes the whole VM from the snapshot: drop the options "
                            "that describe one")  # fmt: skip
        files = Files.in_dir(args.restore)
        start = lambda i: i.restore(files, resume=True)  # noqa: E731
    else:
        config = _run_config(args, api)
        if args.dump_dtb:
            from elvisor.vm import Vm

            with Vm(config) as vm:
                write_file(args.dump_dtb, vm.dtb_blob, "device tree")
            return 0
        if api is not None:
            from elvisor.api.firecracker import Resources

            api.resources = Resources.of(config, api.resources)
        start = lambda i: i.start(config)  # noqa: E731
    if api is None:
        from elvisor.api.instance import run_instance

        return _report(run_instance(instance, start), args.verbose)
    from elvisor.api.control import serve

    return _report(serve(api, args.api_sock, start), args.verbose)


def _report(result: RunResult, verbose: bool) -> int:
    """How the VM ended, on stderr where it is news; the exit status."""
    from elvisor.vm import Outcome

    quiet = (Outcome.POWEROFF, Outcome.RESET, Outcome.STOPPED)
    if result.message and (verbose or result.outcome not in quiet):
        print(f"elvisor: {result.message}", file=sys.stderr)
    return result.exit_status


def _cmd_firecracker(args: argparse.Namespace, started: float) -> int:
    """Firecracker's command line, for tools that start `firecracker`."""
    from elvisor.api.control import Api, serve
    from elvisor.api.firecracker import BadRequest, Resources
    from elvisor.api.instance import Instance
    from elvisor.api.telemetry import set_up_logger

    if args.no_api and args.config_file is None:
        raise UserError("--no-api needs --config-file: nothing else could start the microVM")
    instance = Instance(args.id)
    api = Api(instance, Resources())
    try:
        if args.log_path or args.level:
            set_up_logger(args.log_path, args.level or "Info", args.show_level,
                          args.show_log_origin)  # fmt: skip
        if args.metrics_path:
            api.put_metrics({"metrics_path": str(args.metrics_path)})
    except BadRequest as e:
        raise UserError(str(e)) from None
    config = None
    if args.config_file is not None:
        from elvisor.config import vm_from_settings

        settings = _load_firecracker_config(api, args.config_file)
        try:
            config = vm_from_settings(settings)
        except UserError as e:
            raise UserError(f"{args.config_file}: {e}") from None

    def boot_timer(t: float) -> None:
        since = t - (instance.started_at or started)
        print(f"elvisor: boot timer: the guest ran {since * 1000:.1f} ms after the start",
              file=sys.stderr)  # fmt: skip

    if args.boot_timer:
        instance.on_first_run = boot_timer
    start = None if config is None else lambda i: i.start(config)
    return _report(serve(api, None if args.no_api else args.api_sock, start), False)


def _cmd_ctl(args: argparse.Namespace) -> int:
    """`elvisor ctl SOCKET COMMAND`: one request to a VM's API, its answer in one line."""
    from elvisor.api.client import request

    requests = {
        "status": ("GET", "/", None),
        "pause": ("PATCH", "/vm", {"state": "Paused"}),
        "resume": ("PATCH", "/vm", {"state": "Resumed"}),
        "stop": ("PUT", "/actions", {"action_type": "InstanceStop"}),
    }

    def call(method: str, path: str, body: object = None) -> object:
        status, answer = request(args.socket, method, path, body)
        if status >= 300:
            message = answer.get("fault_message") if isinstance(answer, dict) else answer
            raise UserError(f"{args.socket}: {message}")
        return answer

    if args.ctl_command == "snapshot":
        from elvisor.snapshot import Files

        files = Files.in_dir(args.dir.resolve())
        state = call("GET", "/")
        running = isinstance(state, dict) and state.get("state") == "Running"
        if running:
            call("PATCH", "/vm", {"state": "Paused"})
        try:
            paths = {"snapshot_path": str(files.state), "mem_file_path": str(files.memory)}
            call("PUT", "/snapshot/create", paths)
        finally:
            if running:
                call("PATCH", "/vm", {"state": "Resumed"})
        print(f"{args.dir}: snapshot written; elvisor run --restore {args.dir} goes on from it")
        return 0
    answer = call(*requests[args.ctl_command])
    if isinstance(answer, dict):
        print(" ".join(f"{k}={v}" for k, v in answer.items() if k != "app_name"))
    return 0


def _baremetal_vms(args: argparse.Namespace) -> list[VmConfig]:
    from elvisor.config import BAREMETAL_SETTINGS, load_vms, vm_from_settings

    if args.vms is not None:
        return load_vms(args.vms)
    return [vm_from_settings(_given(args, BAREMETAL_SETTINGS))]


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


def _setup_logging(verbose: bool) -> None:
    level = elvisor.log.INFO if verbose else elvisor.log.WARNING

    def configure() -> None:
        import logging

        handler = logging.StreamHandler(sys.stderr)
        # log lines end in CR LF on a terminal, which may be in raw mode for a guest console
        handler.terminator = "\r\n" if sys.stderr.isatty() else "\n"
        handler.setFormatter(logging.Formatter("elvisor: %(message)s"))
        logging.basicConfig(level=level, handlers=[handler])

    elvisor.log.set_up(level, configure)


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    try:
        if args.command == "lab":
            return _cmd_lab(args, started)
        if args.command == "run":
            _setup_logging(args.verbose)
            return _cmd_run(args, started)
        if args.command == "firecracker":
            _setup_logging(False)
            return _cmd_firecracker(args, started)
        if args.command == "ctl":
            return _cmd_ctl(args)
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
