"""`elvisor baremetal build`: the EL2 hypervisor and its VMs in one bootable image.

Each VM is described as for `elvisor run` (a `VmConfig`: kernel, initrd, cmdline, memory,
cpus, or a bare-metal binary) and loaded by the same code: its kernel, initrd and device tree
go into a scratch copy of its RAM exactly where the VMM would put them, and what was written
there becomes the VM's payloads, which the hypervisor copies into place at start-up. A VM's
RAM has the same addresses to it as to the machine (stage 2 maps it one to one), after the
hypervisor's image; its vCPUs get physical CPUs of their own, in order.

    machine RAM:  [hypervisor + configuration + payloads][VM 0 RAM][VM 1 RAM]...
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from elvisor.arch.arm64 import boot, devicetree, layout
from elvisor.baremetal.config import MAX_VMS, VmImage, image_size, pack
from elvisor.config import VmConfig
from elvisor.devices.bus import Placement
from elvisor.errors import UserError
from elvisor.memory import GuestMemory, align_up

SOURCE = Path(__file__).resolve().parents[3] / "baremetal"
BUILD = SOURCE.parent / "build" / "baremetal"
RAM_ALIGN = 2 << 20  # VMs' RAM in 2 MiB blocks (stage 2 maps them whole)
FIRMWARE_SLACK = 2 << 20  # room after the image for the device tree the loader adds
UART = Placement("pl011", layout.UART_BASE, layout.UART_SIZE, layout.UART_SPI)


@dataclass(frozen=True)
class Platform:
    name: str
    ram_base: int  # the machine's RAM
    load_addr: int  # where its loader puts an Image (the hypervisor)
    max_cpus: int


PLATFORMS = {
    "qemu-virt": Platform("qemu-virt", 0x4000_0000, 0x4008_0000, 8),
    "rpi4": Platform("rpi4", 0, 0x8_0000, 4),
}


def hypervisor(platform: Platform) -> bytes:
    """The hypervisor's binary for `platform`, built (or brought up to date) with make."""
    out = BUILD / platform.name
    result = subprocess.run(
        ["make", "-s", "-C", str(SOURCE), f"PLATFORM={platform.name}", f"BUILD={out}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise UserError(
            f"building the hypervisor failed (needs gcc-aarch64-linux-gnu): "
            f"{(result.stderr or result.stdout).strip().splitlines()[-1]}"
        )
    return (out / "elvisor-el2.bin").read_bytes()


@dataclass(frozen=True)
class Image:
    data: bytes
    memory: int  # the machine RAM it needs (from the start of RAM to the last VM's end)


def build(vms: list[VmConfig], platform: Platform, gic_version: int) -> Image:
    """The bootable image for `vms` on `platform`."""
    if not 0 < len(vms) <= MAX_VMS:
        raise UserError(f"1 to {MAX_VMS} VMs, not {len(vms)}")
    cpus = sum(vm.cpus for vm in vms)
    if cpus > platform.max_cpus:
        raise UserError(
            f"the VMs have {cpus} vCPUs, one CPU each: {platform.name} has {platform.max_cpus}"
        )
    binary = hypervisor(platform)
    # first pass: how big the payloads are (they do not depend on where the RAM is)
    trial = [load_vm(vm, f"vm{i}", platform.ram_base, 0, gic_version) for i, vm in enumerate(vms)]
    image_end = platform.load_addr + len(pack(binary, trial))
    end = max(image_end, platform.load_addr + image_size(binary))
    base = align_up(end + FIRMWARE_SLACK, RAM_ALIGN)
    placed = []
    first_cpu = 0
    for i, vm in enumerate(vms):
        placed.append(load_vm(vm, f"vm{i}", base, first_cpu, gic_version))
        base += align_up(vm.memory, RAM_ALIGN)
        first_cpu += vm.cpus
    return Image(pack(binary, placed), base - platform.ram_base)


def load_vm(
    config: VmConfig, name: str, ram_base: int, first_cpu: int, gic_version: int
) -> VmImage:
    """`config` loaded into a scratch copy of its RAM at `ram_base`, as the VMM loads it: what
    the hypervisor is to copy there (kernel, initrd, device tree) and where it starts."""
    ram_size = align_up(config.memory, RAM_ALIGN)
    memory = GuestMemory([(ram_base, ram_size)])
    try:
        if config.binary is not None and config.load_addr is not None:
            raise UserError("a VM's raw binary goes 512 KiB into its RAM: drop --load-addr")
        guest = boot.load_guest(memory, config.boot)
        loaded, where = guest.loaded, guest.layout
        payloads = [(loaded.start, memory.read(loaded.start, loaded.end - loaded.start))]
        if guest.initrd is not None and where.initrd is not None:
            payloads.append((where.initrd, guest.initrd))
        dtb = devicetree.build(
            devicetree.DeviceTreeSpec(
                memory=[(ram_base, ram_size)],
                mpidrs=list(range(config.cpus)),
                gic_version=gic_version,
                gic_regions=_gic_regions(gic_version, config.cpus),
                devices=[UART],
                cmdline=config.cmdline,
                stdout=UART,
                initrd=guest.initrd_range,
                pmu=False,
                rng_seed=secrets.token_bytes(64),
                kaslr_seed=secrets.randbits(64),
            )
        )  # fmt: skip
        payloads.append((where.dtb, dtb))
    finally:
        memory.close()
    return VmImage(name, ram_base, ram_size, loaded.entry, where.dtb, first_cpu, config.cpus,
                   payloads)  # fmt: skip


def _gic_regions(version: int, cpus: int) -> list[tuple[int, int]]:
    """Where the VM finds its (emulated) GIC: as in the VMM's memory map."""
    if version == 2:
        return [
            (layout.GIC_DIST_BASE, layout.GIC_DIST_SIZE),
            (layout.GIC_CPU_BASE, layout.GIC_CPU_SIZE),
        ]
    return [
        (layout.GIC_DIST_BASE, layout.GIC_DIST_SIZE),
        (layout.GIC_REDIST_BASE, layout.GIC_REDIST_SIZE_PER_CPU * cpus),
    ]
