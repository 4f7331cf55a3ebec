"""The in-kernel vGIC (v2 or v3) and the interrupt lines devices raise through it."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from elvisor.arch.arm64 import layout
from elvisor.errors import UserError
from elvisor.kvm import DeviceType, KvmError
from elvisor.kvm.fds import Device, Vm
from elvisor.kvm.uapi import (
    KVM_ARM_IRQ_TYPE_SHIFT,
    KVM_ARM_IRQ_TYPE_SPI,
    KVM_DEV_ARM_VGIC_CTRL_INIT,
    KVM_DEV_ARM_VGIC_GRP_ADDR,
    KVM_DEV_ARM_VGIC_GRP_CTRL,
    KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
    KVM_IRQFD_FLAG_RESAMPLE,
    KVM_VGIC_V2_ADDR_TYPE_CPU,
    KVM_VGIC_V2_ADDR_TYPE_DIST,
    KVM_VGIC_V3_ADDR_TYPE_DIST,
    KVM_VGIC_V3_ADDR_TYPE_REDIST,
)

DEVICE_TYPES = {2: DeviceType.KVM_DEV_TYPE_ARM_VGIC_V2, 3: DeviceType.KVM_DEV_TYPE_ARM_VGIC_V3}
MAX_CPUS = {2: layout.GICV2_MAX_CPUS, 3: layout.GICV3_MAX_CPUS}


def available(vm: Vm, version: int) -> bool:
    try:
        vm.create_device(DEVICE_TYPES[version], test=True)
    except KvmError:
        return False
    return True


def choose_version(vm: Vm, wanted: int | None) -> int:
    """v3 where the host offers it, v2 otherwise, or what the user asked for (if offered)."""
    if wanted is not None:
        if not available(vm, wanted):
            other = 5 - wanted
            raise UserError(
                f"this host's KVM cannot give guests a GICv{wanted} "
                f"(it can{'' if available(vm, other) else 'not'} do GICv{other}): "
                f"drop --gic {wanted}"
            )
        return wanted
    for version in (3, 2):
        if available(vm, version):
            return version
    raise UserError("this host's KVM can create neither a vGICv3 nor a vGICv2: see elvisor doctor")


@dataclass
class Gic:
    version: int
    device: Device
    regions: list[tuple[int, int]]  # as the device tree describes them

    def close(self) -> None:
        self.device.close()


def create(vm: Vm, version: int, cpus: int) -> Gic:
    """Create the vGIC and place its regions (after the vCPUs exist, before they run)."""
    if cpus > MAX_CPUS[version]:
        raise UserError(f"a GICv{version} guest has at most {MAX_CPUS[version]} vCPUs, not {cpus}")
    device = vm.create_device(DEVICE_TYPES[version])
    assert device is not None
    if version == 3:
        regions = [
            (layout.GIC_DIST_BASE, layout.GIC_DIST_SIZE),
            (layout.GIC_REDIST_BASE, cpus * layout.GIC_REDIST_SIZE_PER_CPU),
        ]
        kinds = [KVM_VGIC_V3_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_REDIST]
    else:
        regions = [
            (layout.GIC_DIST_BASE, layout.GIC_DIST_SIZE),
            (layout.GIC_CPU_BASE, layout.GIC_CPU_SIZE),
        ]
        kinds = [KVM_VGIC_V2_ADDR_TYPE_DIST, KVM_VGIC_V2_ADDR_TYPE_CPU]
    for (base, _), kind in zip(regions, kinds, strict=True):
        device.set_device_attr(KVM_DEV_ARM_VGIC_GRP_ADDR, kind, ctypes.c_uint64(base))
    device.set_device_attr(KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, ctypes.c_uint32(layout.NR_IRQS))
    device.set_device_attr(KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT)
    return Gic(version, device, regions)


class SpiLine:
    """A shared peripheral interrupt, level-sensitive, raised with KVM_IRQ_LINE."""

    def __init__(self, vm: Vm, spi: int) -> None:
        if not 0 <= spi < layout.NR_IRQS - layout.SPI_BASE:
            raise ValueError(f"SPI {spi} is beyond the vGIC's {layout.NR_IRQS} interrupts")
        self._vm = vm
        self._irq = (KVM_ARM_IRQ_TYPE_SPI << KVM_ARM_IRQ_TYPE_SHIFT) | (layout.SPI_BASE + spi)

    def set_level(self, level: bool) -> None:
        self._vm.irq_line(self._irq, int(level))


class IrqfdLine:
    """A level-sensitive SPI raised through an irqfd in resample mode, without an ioctl.

    Writing `fd` raises the line; KVM lowers it when the guest ends the interrupt (EOI) and
    then signals `resample_fd`, whose reader raises it again if the source is still asserted.
    With the vGIC's default routing, GSI n is SPI n.
    """

    def __init__(self, vm: Vm, spi: int) -> None:
        if not 0 <= spi < layout.NR_IRQS - layout.SPI_BASE:
            raise ValueError(f"SPI {spi} is beyond the vGIC's {layout.NR_IRQS} interrupts")
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.resample_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            vm.irqfd(self.fd, spi, KVM_IRQFD_FLAG_RESAMPLE, self.resample_fd)
        except BaseException:
            self.close()
            raise

    def set_level(self, level: bool) -> None:
        if level:
            os.eventfd_write(self.fd, 1)
        # lowering is KVM's, at the guest's EOI

    def close(self) -> None:
        """Closing the eventfds takes the irqfd down too (KVM sees them hang up)."""
        for fd in (self.fd, self.resample_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.resample_fd = -1
