"""The machine a VmConfig describes, assembled in one forward recipe:

    KVM -> VM -> guest memory -> vCPUs (secondaries powered off) -> vGIC -> PMU -> devices on
    the MMIO bus -> (then, to boot it) kernel/binary, initrd, device tree -> boot registers

`build()` returns the `Machine`, whose vCPUs have not run; `boot()` loads what it boots. The
life cycle that runs it (threads, pause, snapshots) is `elvisor.vm.Vm`'s.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from elvisor import fence
from elvisor.arch.arm64 import gic, layout, regs
from elvisor.config import NetConfig, VmConfig
from elvisor.console import Console
from elvisor.devices.bus import MmioBus, Placement
from elvisor.devices.pl011 import Pl011
from elvisor.devices.pl031 import Pl031
from elvisor.devices.virtio.device import VirtioDevice
from elvisor.devices.virtio.mmio import Reg, VirtioMmio
from elvisor.errors import UserError
from elvisor.hypercalls import HypercallTable
from elvisor.kvm import Cap, VcpuFeature
from elvisor.kvm.fds import Kvm, Vcpu, open_kvm
from elvisor.kvm.fds import Vm as VmFd
from elvisor.kvm.uapi import (
    KVM_API_VERSION,
    KVM_ARM_VCPU_PMU_V3_CTRL,
    KVM_ARM_VCPU_PMU_V3_INIT,
    KVM_ARM_VCPU_PMU_V3_IRQ,
    KVM_IOEVENTFD_FLAG_DATAMATCH,
    KVM_VM_TYPE_ARM_IPA_SIZE,
)
from elvisor.memory import GuestMemory

if TYPE_CHECKING:
    from elvisor.arch.arm64 import boot as loader
    from elvisor.arch.arm64 import devicetree
    from elvisor.devices.virtio.console import VirtioConsole

DEFAULT_IPA_BITS = 40
REQUIRED_CAPS = {
    Cap.KVM_CAP_USER_MEMORY: "guest memory",
    Cap.KVM_CAP_ONE_REG: "vCPU registers",
    Cap.KVM_CAP_ARM_PSCI_0_2: "PSCI 0.2",
    Cap.KVM_CAP_DEVICE_CTRL: "the in-kernel vGIC",
}


@dataclass(frozen=True)
class VirtioSlot:
    placement: Placement
    transport: VirtioMmio
    resample_fd: int | None  # the irqfd's resample eventfd, for the device's I/O thread


@dataclass
class Machine:
    """A VM's parts, as built; `close()` releases them all, in reverse order."""

    config: VmConfig
    kvm: Kvm
    vm_fd: VmFd
    memory: GuestMemory
    vcpus: list[Vcpu]
    mpidrs: list[int]  # each vCPU's affinity, as the device tree names it
    gic: gic.Gic
    pmu: bool
    bus: MmioBus
    uart_placement: Placement
    uart: Pl011
    rtc: Pl031
    virtio: list[VirtioSlot]
    console_input: Pl011 | VirtioConsole  # where console input goes
    hypercalls: HypercallTable
    ipa_bits: int  # the size of its guest physical addresses
    stack: contextlib.ExitStack = field(repr=False)
    dtb_blob: bytes = b""  # the device tree it booted with (after boot())

    def close(self) -> None:
        self.stack.close()


def build(config: VmConfig, console: Console) -> Machine:
    """Assemble the machine `config` describes; nothing has run yet."""
    with contextlib.ExitStack() as stack:
        machine = _Recipe(config, console, stack).machine()
        machine.stack = stack.pop_all()  # (the machine's to close from now on)
    return machine


def boot(machine: Machine) -> None:
    """Load what the guest boots, its initrd and its device tree; set the boot registers.
    (A restored machine is not booted: the loader is imported here, not before.)"""
    from elvisor.arch.arm64 import boot as loader
    from elvisor.arch.arm64 import devicetree

    guest = loader.load_guest(machine.memory, machine.config.boot)
    machine.dtb_blob = devicetree.build(_device_tree_spec(machine, guest))
    machine.memory.write(guest.layout.dtb, machine.dtb_blob)
    _set_boot_registers(machine.vcpus[0], guest.loaded.entry, guest.layout.dtb)


class _Recipe:
    """The steps of `build`, each a method, everything opened pushed on `stack`."""

    def __init__(self, config: VmConfig, console: Console, stack: contextlib.ExitStack) -> None:
        self.config = config
        self.console = console
        self.stack = stack

    def machine(self) -> Machine:
        c, stack = self.config, self.stack
        self.kvm = kvm = stack.enter_context(open_kvm())
        self._check_host()
        ipa_bits = self._ipa_bits()
        vm_type = 0 if ipa_bits == DEFAULT_IPA_BITS else KVM_VM_TYPE_ARM_IPA_SIZE(ipa_bits)
        vm_fd = self.vm_fd = stack.enter_context(kvm.create_vm(vm_type))
        gic_version = gic.choose_version(vm_fd, c.gic)
        memory = self.memory = self._guest_memory()
        vcpus = [stack.enter_context(self._vcpu(i)) for i in range(c.cpus)]
        mpidrs = [v.get_one_reg(regs.MPIDR_EL1) & regs.MPIDR_AFFINITY_MASK for v in vcpus]
        the_gic = gic.create(vm_fd, gic_version, c.cpus)
        stack.callback(the_gic.close)
        pmu = self._init_pmu(vcpus)
        bus = self.bus = MmioBus()
        uart_placement = Placement("pl011", layout.UART_BASE, layout.UART_SIZE, layout.UART_SPI)
        uart = Pl011(gic.SpiLine(vm_fd, layout.UART_SPI), self.console.write)
        bus.add(uart_placement, uart)
        rtc = Pl031(gic.SpiLine(vm_fd, layout.RTC_SPI))
        stack.callback(rtc.close)
        bus.add(Placement("pl031", layout.RTC_BASE, layout.RTC_SIZE, layout.RTC_SPI), rtc)
        self.virtio_console: VirtioConsole | None = None
        virtio = [self._virtio_slot(slot, make) for slot, make in enumerate(self._virtio())]
        self._python_devices()
        return Machine(
            config=c, kvm=kvm, vm_fd=vm_fd, memory=memory, vcpus=vcpus, mpidrs=mpidrs,
            gic=the_gic, pmu=pmu, bus=bus, uart_placement=uart_placement, uart=uart, rtc=rtc,
            virtio=virtio, console_input=self.virtio_console or uart,
            hypercalls=HypercallTable(vm_fd), ipa_bits=ipa_bits, stack=stack,
        )  # fmt: skip

    def _check_host(self) -> None:
        kvm = self.kvm
        if (api := kvm.get_api_version()) != KVM_API_VERSION:
            raise UserError(f"/dev/kvm speaks KVM API {api}, elvisor needs {KVM_API_VERSION}")
        for cap, what in REQUIRED_CAPS.items():
            if not kvm.check_extension(cap):
                raise UserError(f"this host's KVM lacks {what} ({cap.name}): see elvisor doctor")
        max_vcpus = kvm.check_extension(Cap.KVM_CAP_MAX_VCPUS) or kvm.check_extension(
            Cap.KVM_CAP_NR_VCPUS
        )
        if self.config.cpus > max_vcpus:
            raise UserError(
                f"--cpus {self.config.cpus}: this host's KVM allows at most {max_vcpus} vCPUs"
            )

    def _ipa_bits(self) -> int:
        ram_end = layout.RAM_BASE + self.config.memory
        limit = self.kvm.check_extension(Cap.KVM_CAP_ARM_VM_IPA_SIZE) or DEFAULT_IPA_BITS
        need = max(DEFAULT_IPA_BITS, (ram_end - 1).bit_length())
        if need > limit:
            raise UserError(
                f"--memory {self.config.memory >> 20}M needs {need}-bit guest physical "
                f"addresses; this host's KVM offers {limit} bits"
            )
        return need

    def _guest_memory(self) -> GuestMemory:
        """Anonymous memory, or a snapshot's memory file mapped copy-on-write."""
        size, snapshot = self.config.memory, self.config.snapshot
        file = -1
        try:
            if snapshot is not None:
                file = os.open(snapshot, os.O_RDONLY | os.O_CLOEXEC)
                if os.fstat(file).st_size != size:
                    raise UserError(f"{snapshot} does not hold {size >> 20} MiB of guest RAM")
            memory = GuestMemory([(layout.RAM_BASE, size)], file=file)
        except OSError as e:
            what = f"the memory file {snapshot}" if snapshot else f"{size >> 20} MiB of guest RAM"
            raise UserError(f"cannot map {what}: {e.strerror}") from None
        finally:
            if file >= 0:
                os.close(file)  # (the mapping keeps the file)
        self.stack.callback(memory.close)
        for region in memory.regions:
            self.vm_fd.set_user_memory_region(
                region.slot, region.gpa, region.size, region.host_addr
            )
        return memory

    def _vcpu(self, index: int) -> Vcpu:
        vcpu = self.vm_fd.create_vcpu(index)
        init = self.vm_fd.arm_preferred_target()
        features = 1 << VcpuFeature.KVM_ARM_VCPU_PSCI_0_2
        if index > 0:  # secondaries wait for PSCI CPU_ON
            features |= 1 << VcpuFeature.KVM_ARM_VCPU_POWER_OFF
        if self._pmu_wanted():
            features |= 1 << VcpuFeature.KVM_ARM_VCPU_PMU_V3
        if self.kvm.check_extension(Cap.KVM_CAP_ARM_PTRAUTH_ADDRESS) and self.kvm.check_extension(
            Cap.KVM_CAP_ARM_PTRAUTH_GENERIC
        ):
            features |= (1 << VcpuFeature.KVM_ARM_VCPU_PTRAUTH_ADDRESS) | (
                1 << VcpuFeature.KVM_ARM_VCPU_PTRAUTH_GENERIC
            )
        init.features[0] = features
        try:
            vcpu.arm_vcpu_init(init)
        except BaseException:
            vcpu.close()
            raise
        return vcpu

    def _pmu_wanted(self) -> bool:
        if not self.config.pmu:
            return False
        if not self.kvm.check_extension(Cap.KVM_CAP_ARM_PMU_V3):
            raise UserError("this host's KVM offers no PMU to guests: drop --pmu")
        return True

    def _init_pmu(self, vcpus: list[Vcpu]) -> bool:
        """The PMU's overflow interrupt, once the vGIC is initialised (with --pmu)."""
        if not self._pmu_wanted():
            return False
        irq = ctypes.c_int(layout.PPI_BASE + layout.PMU_PPI)
        for vcpu in vcpus:
            vcpu.set_device_attr(KVM_ARM_VCPU_PMU_V3_CTRL, KVM_ARM_VCPU_PMU_V3_IRQ, irq)
            vcpu.set_device_attr(KVM_ARM_VCPU_PMU_V3_CTRL, KVM_ARM_VCPU_PMU_V3_INIT)
        return True

    def _python_devices(self) -> None:
        """The user's devices (--device): one after another from USER_MMIO_BASE, each with
        its own SPI and a device-tree node of its compatible."""
        from elvisor.devices import python

        base = layout.USER_MMIO_BASE
        for index, spec in enumerate(self.config.devices):
            cls = spec.device_class()
            size = python.window(cls)
            assert base + size <= layout.USER_MMIO_LIMIT  # (16 devices of at most 1 MiB)
            spi = layout.USER_SPI_BASE + index
            line = gic.SpiLine(self.vm_fd, spi)
            try:
                device = cls(line, **dict(spec.options))
            except Exception as e:  # (the user's code: one line, not a traceback)
                raise UserError(f"--device {cls.__name__}: it cannot be made: {e!r}") from None
            placement = Placement(python.node_name(cls), base, size, spi, python.compatible(cls))
            self.bus.add(placement, device)
            base += size

    def _virtio(self) -> list[Callable[[], VirtioDevice]]:
        """The virtio devices, in slot order (a guest numbers its disks in this order)."""
        c = self.config
        makers: list[Callable[[], VirtioDevice]] = []
        if c.console == "virtio":
            makers.append(self._make_virtio_console)
        if c.rng:
            makers.append(_make_rng)
        makers += [partial(_make_block, d.path, d.readonly) for d in c.disks]
        makers += [partial(_make_net, n) for n in c.nets]
        if c.vsock_cid is not None:
            makers.append(partial(_make_vsock, c.vsock_cid))
        if len(makers) > layout.VIRTIO_MMIO_SLOTS:
            raise UserError(f"{len(makers)} virtio devices: at most {layout.VIRTIO_MMIO_SLOTS}")
        if makers and fence.UNAVAILABLE:
            raise UserError(f"virtio devices need a memory barrier: {fence.UNAVAILABLE}")
        return makers

    def _make_virtio_console(self) -> VirtioDevice:
        from elvisor.devices.virtio.console import VirtioConsole

        self.virtio_console = VirtioConsole(self.console.write)
        return self.virtio_console

    def _virtio_slot(self, slot: int, make: Callable[[], VirtioDevice]) -> VirtioSlot:
        """Place a virtio-mmio transport and its device: queue kicks through ioeventfds and
        the interrupt through an irqfd in resample mode, where the host has them."""
        base = layout.VIRTIO_MMIO_BASE + slot * layout.VIRTIO_MMIO_SIZE
        placement = Placement("virtio_mmio", base, layout.VIRTIO_MMIO_SIZE,
                              layout.VIRTIO_SPI_BASE + slot)  # fmt: skip
        assert placement.spi is not None
        line: gic.IrqfdLine | gic.SpiLine
        if self.kvm.check_extension(Cap.KVM_CAP_IRQFD) and self.kvm.check_extension(
            Cap.KVM_CAP_IRQFD_RESAMPLE
        ):
            line = gic.IrqfdLine(self.vm_fd, placement.spi)
            self.stack.callback(line.close)
        else:
            line = gic.SpiLine(self.vm_fd, placement.spi)
        device = make()
        transport = VirtioMmio(device, self.memory, line)
        self.stack.callback(transport.close)
        if self.kvm.check_extension(Cap.KVM_CAP_IOEVENTFD):
            for index, fd in enumerate(transport.notifiers):
                self.vm_fd.ioeventfd(fd, base + Reg.VIRTIO_MMIO_QUEUE_NOTIFY, 4, index,
                                     KVM_IOEVENTFD_FLAG_DATAMATCH)  # fmt: skip
        self.bus.add(placement, transport)
        resample_fd = line.resample_fd if isinstance(line, gic.IrqfdLine) else None
        return VirtioSlot(placement, transport, resample_fd)


# Each device's module is imported when a VM has that device, not before: a VMM that starts
# fast loads only what the VM it runs needs.


def _make_rng() -> VirtioDevice:
    from elvisor.devices.virtio.rng import Rng

    return Rng()


def _make_block(path: Path, readonly: bool) -> VirtioDevice:
    from elvisor.devices.virtio.block import Block

    return Block(path, readonly)


def _make_net(net: NetConfig) -> VirtioDevice:
    from elvisor.devices.passt import Passt
    from elvisor.devices.tap import Tap
    from elvisor.devices.vhost import open_vhost
    from elvisor.devices.virtio.net import Net
    from elvisor.devices.virtio.vhost_net import VhostNet

    mac = net.mac or bytes([0x52, 0x54, 0x00, *os.urandom(3)])
    backend = Tap(net.tap) if net.backend == "tap" and net.tap else Passt()
    try:
        if isinstance(backend, Tap) and net.vhost is not False:
            vhost = open_vhost("/dev/vhost-net", required=net.vhost is True)
            if vhost is not None:
                return VhostNet(backend, vhost, mac)
        return Net(backend, mac)
    except BaseException:
        backend.close()
        raise


def _make_vsock(cid: int) -> VirtioDevice:
    from elvisor.devices.vhost import open_vhost
    from elvisor.devices.virtio.vsock import Vsock

    vhost = open_vhost("/dev/vhost-vsock", required=True)
    assert vhost is not None
    try:
        return Vsock(vhost, cid)
    except BaseException:
        vhost.close()
        raise


def _device_tree_spec(machine: Machine, guest: loader.Guest) -> devicetree.DeviceTreeSpec:
    from elvisor.arch.arm64 import devicetree

    return devicetree.DeviceTreeSpec(
        memory=[(r.gpa, r.size) for r in machine.memory.regions],
        mpidrs=machine.mpidrs,
        gic_version=machine.gic.version,
        gic_regions=machine.gic.regions,
        devices=machine.bus.placements,
        cmdline=machine.config.cmdline,
        stdout=machine.uart_placement,
        initrd=guest.initrd_range,
        pmu=machine.pmu,
        rng_seed=os.urandom(64),
        kaslr_seed=int.from_bytes(os.urandom(8), "little"),
    )


def _set_boot_registers(vcpu: Vcpu, entry: int, dtb: int) -> None:
    """arm64 boot protocol (booting.rst): x0 = device tree, x1-x3 = 0, MMU off, EL1h."""
    vcpu.set_one_reg(regs.PSTATE, regs.BOOT_PSTATE)  # EL1h, D, A, I and F masked
    vcpu.set_one_reg(regs.PC, entry)
    vcpu.set_one_reg(regs.x(0), dtb)
    for n in (1, 2, 3):
        vcpu.set_one_reg(regs.x(n), 0)
