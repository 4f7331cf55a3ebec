"""The `elvisor` command: a thin layer over the Python API.

Exit statuses: 0 success; 2 bad input or unusable host (one line, no traceback);
`lab run` passes its command's status through, 124 on timeout, 130/143 on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import NoReturn

from elvisor import __version__
from elvisor.errors import UserError
from elvisor.units import parse_size


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
    )
    if session.native_kvm():
        return session.run(request, None, started)
    return session.run(request, ensure_image(args.suite, machine.flavour, args.mirror), started)


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


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    try:
        if args.command == "lab":
            return _cmd_lab(args, started)
        if args.command == "kvm":
            return _cmd_kvm_info(args)
        return _cmd_doctor(args)
    except UserError as e:
        print(f"elvisor: error: {e}", file=sys.stderr)
        return e.exit_status
