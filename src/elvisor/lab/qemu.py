"""The QEMU command line of the lab."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from elvisor.errors import UserError
from elvisor.lab.image import LabImage
from elvisor.lab.profiles import LabMachine

QEMU = "qemu-system-aarch64"
# arm64 Linux accepts at most this many bytes of command line (COMMAND_LINE_SIZE)
COMMAND_LINE_SIZE = 2048


@dataclass(frozen=True)
class Share:
    """A host directory shared into the lab with virtio-9p, mounted at the same path."""

    path: Path
    tag: str
    readonly: bool = False


def qemu_binary() -> str:
    found = shutil.which(QEMU)
    if not found:
        raise UserError(
            f"{QEMU} is not installed: on Debian, apt-get install --no-install-recommends "
            "qemu-system-arm (other systems: their QEMU AArch64 system emulator package)"
        )
    return found


def _escape(value: str) -> str:
    """QEMU option values double their commas."""
    return value.replace(",", ",,")


def cpu_option(cpu: str) -> str:
    # pointer authentication with QEMU's own cheap hash instead of QARMA: much faster, and
    # the lab's software does not depend on which algorithm signs its pointers
    return "max,pauth-impdef=on" if cpu == "max" else cpu


def qemu_argv(
    binary: str,
    machine: LabMachine,
    image: LabImage,
    append: str,
    shares: list[Share],
    disks: tuple[Path, ...] = (),
) -> list[str]:
    if len(append.encode()) >= COMMAND_LINE_SIZE:
        raise UserError(
            f"the command is too long for the lab's kernel command line ({len(append)} bytes, "
            f"at most {COMMAND_LINE_SIZE - 1}): put it in a script in the checkout"
        )
    argv = [
        binary,
        "-nodefaults",
        "-no-user-config",
        "-machine",
        f"virt,virtualization=on,gic-version={machine.gic}",
        "-cpu",
        cpu_option(machine.cpu),
        "-smp",
        str(machine.cpus),
        "-m",
        f"{machine.memory_mib}M",
        "-display",
        "none",
        "-monitor",
        "none",
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
        "-kernel",
        _escape(str(image.kernel)),
        "-initrd",
        _escape(str(image.initrd)),
        "-append",
        append,
        "-no-reboot",
    ]
    for share in shares:
        options = [
            "local",
            f"path={_escape(str(share.path))}",
            f"mount_tag={share.tag}",
            "security_model=none",
            "multidevs=remap",
        ]
        if share.readonly:
            options.append("readonly=on")
        argv += ["-virtfs", ",".join(options)]
    for n, disk in enumerate(disks):  # /dev/vda, /dev/vdb, ... in the lab
        argv += [
            "-drive", f"file={_escape(str(disk))},format=raw,if=none,id=disk{n}",
            "-device", f"virtio-blk-pci,drive=disk{n}",
        ]  # fmt: skip
    return argv
