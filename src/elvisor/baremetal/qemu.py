"""Running a bare-metal image under QEMU's `virt` machine with EL2 (virtualization=on): the
hypervisor is loaded as a kernel, so it starts at EL2 with the device tree in x0, and the
machine's PSCI is reached with SMC."""

from __future__ import annotations

import shutil
from pathlib import Path

from elvisor.errors import UserError

CPU_MODELS = ("max", "cortex-a53", "cortex-a57", "cortex-a72")


def qemu_binary() -> str:
    found = shutil.which("qemu-system-aarch64")
    if not found:
        raise UserError(
            "qemu-system-aarch64 is missing: "
            "apt-get install --no-install-recommends qemu-system-arm"
        )
    return found


def command(
    image: Path, *, memory: int, cpus: int, gic_version: int, cpu: str, gdb: bool = False
) -> list[str]:
    """QEMU's command line for `image` (`memory` bytes of RAM, `cpus` CPUs)."""
    if cpu not in CPU_MODELS:
        raise UserError(f"--cpu {cpu}: one of {', '.join(CPU_MODELS)}")
    argv = [
        qemu_binary(),
        "-M", f"virt,virtualization=on,gic-version={gic_version}",
        "-cpu", cpu,
        "-smp", str(cpus),
        "-m", f"{max(memory >> 20, 256)}M",
        # the console: Ctrl-C and the like go to the VMs; QEMU's Ctrl-A x quits, as in `run`
        "-nodefaults", "-display", "none", "-no-reboot",
        "-chardev", "stdio,id=console,mux=on,signal=off", "-serial", "chardev:console",
        "-kernel", str(image),
    ]  # fmt: skip
    if gdb:
        argv += ["-s", "-S"]  # a gdb stub on :1234, the CPUs held until gdb says continue
    return argv
