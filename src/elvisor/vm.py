"""A VM: built from a VmConfig in one forward recipe, then run until it powers off.

    KVM -> VM -> guest memory -> vCPUs (secondaries powered off) -> vGIC -> PMU -> devices on
    the MMIO bus -> kernel/binary, initrd, device tree -> boot registers -> run

`Vm.run()` starts one thread per vCPU, each sitting in KVM_RUN (which releases the GIL) and
serving its MMIO exits; the calling (main) thread moves console input and waits for the end:
PSCI SYSTEM_OFF or SYSTEM_RESET, Ctrl-A x, a signal, or a guest failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import secrets
import selectors
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import partial
from types import FrameType

from elvisor import fence
from elvisor.arch.arm64 import boot, devicetree, gic, layout, regs
from elvisor.config import NetConfig, VmConfig
from elvisor.console import Console
from elvisor.devices.bus import MmioBus, Placement
from elvisor.devices.passt import Passt
from elvisor.devices.pl011 import Pl011
from elvisor.devices.pl031 import Pl031
from elvisor.devices.tap import Tap
from elvisor.devices.vhost import open_vhost
from elvisor.devices.virtio.block import Block
from elvisor.devices.virtio.console import VirtioConsole
from elvisor.devices.virtio.device import VirtioDevice
from elvisor.devices.virtio.mmio import Reg, VirtioMmio
from elvisor.devices.virtio.net import Net
from elvisor.devices.virtio.rng import Rng
from elvisor.devices.virtio.vhost_net import VhostNet
from elvisor.devices.virtio.vsock import Vsock
from elvisor.devices.virtio.worker import Worker
from elvisor.errors import UserError
from elvisor.kvm import Cap, ExitReason, KvmError, SystemEvent, VcpuFeature
from elvisor.kvm.fds import Kvm, Vcpu
from elvisor.kvm.probe import open_kvm
from elvisor.kvm.uapi import (
    KVM_API_VERSION,
    KVM_ARM_VCPU_PMU_V3_CTRL,
    KVM_ARM_VCPU_PMU_V3_INIT,
    KVM_ARM_VCPU_PMU_V3_IRQ,
    KVM_ARM_VM_SMCCC_CTRL,
    KVM_ARM_VM_SMCCC_FILTER,
    KVM_HYPERCALL_EXIT_SMC,
    KVM_IOEVENTFD_FLAG_DATAMATCH,
    KVM_RUN_MMIO_DATA_OFFSET,
    KVM_SMCCC_FILTER_FWD_TO_USER,
    KVM_VM_TYPE_ARM_IPA_SIZE,
    Ioctl,
    kvm_run,
    kvm_smccc_filter,
)
from elvisor.memory import GuestMemory
from elvisor.terminal import EscapeDecoder, raw_terminal

log = logging.getLogger(__name__)

KICK_SIGNAL = signal.SIGUSR1
DEFAULT_IPA_BITS = 40
SMCCC_RET_NOT_SUPPORTED = 0xFFFF_FFFF_FFFF_FFFF  # -1
REQUIRED_CAPS = {
    Cap.KVM_CAP_USER_MEMORY: "guest memory",
    Cap.KVM_CAP_ONE_REG: "vCPU registers",
    Cap.KVM_CAP_ARM_PSCI_0_2: "PSCI 0.2",
    Cap.KVM_CAP_DEVICE_CTRL: "the in-kernel vGIC",
}


class Outcome(Enum):
    POWEROFF = "poweroff"  # PSCI SYSTEM_OFF
    RESET = "reset"  # PSCI SYSTEM_RESET
    QUIT = "quit"  # Ctrl-A x on the console
    FAILED = "failed"  # the guest could not go on: see the message
    SIGNAL = "signal"  # SIGINT, SIGTERM or SIGHUP


@dataclass(frozen=True)
class RunResult:
    outcome: Outcome
    exit_status: int  # what `elvisor run` exits with
    message: str = ""


@dataclass(frozen=True)
class Hypercall:
    """An SMCCC call (HVC or SMC) the guest made, forwarded to a Python handler."""

    function_id: int
    args: tuple[int, ...]  # x1-x6
    conduit: str  # "hvc" or "smc"
    vcpu: int


HypercallHandler = Callable[[Hypercall], Sequence[int] | int | None]


@dataclass(frozen=True)
class VirtioSlot:
    placement: Placement
    transport: VirtioMmio
    resample_fd: int | None  # the irqfd's resample eventfd, for the device's I/O thread


class HypercallsUnsupported(UserError):
    pass


class _Signalled(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Vm:
    """A VM built from `config`; `run()` it, read its memory, `close()` it."""

    def __init__(self, config: VmConfig, console: Console | None = None) -> None:
        self.config = config
        self.console = console or Console.stdio()
        self._stack = contextlib.ExitStack()
        self._result: RunResult | None = None
        self._result_lock = threading.Lock()
        self._stopping = False
        self._hypercalls: list[tuple[int, int, HypercallHandler]] = []
        self._threads: list[threading.Thread] = []
        self.on_first_run: Callable[[float], None] | None = None  # gets vCPU 0's first KVM_RUN
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # --- the recipe ------------------------------------------------------------------------

    def _build(self) -> None:
        c = self.config
        self.kvm = self._stack.enter_context(open_kvm())
        self._check_host(self.kvm)
        ram_end = layout.RAM_BASE + c.memory
        self.vm_fd = self._stack.enter_context(self.kvm.create_vm(self._vm_type(ram_end)))
        gic_version = gic.choose_version(self.vm_fd, c.gic)
        self.memory = self._guest_memory(c.memory)
        self.vcpus = [self._stack.enter_context(self._vcpu(i)) for i in range(c.cpus)]
        self.mpidrs = [v.get_one_reg(regs.MPIDR_EL1) & regs.MPIDR_AFFINITY_MASK for v in self.vcpus]
        self.gic = gic.create(self.vm_fd, gic_version, c.cpus)
        self._stack.callback(self.gic.close)
        self.pmu = self._init_pmu()
        self.bus = MmioBus()
        self.uart_placement = Placement(
            "pl011", layout.UART_BASE, layout.UART_SIZE, layout.UART_SPI
        )
        self.uart = Pl011(gic.SpiLine(self.vm_fd, layout.UART_SPI), self.console.write)
        self.bus.add(self.uart_placement, self.uart)
        rtc_placement = Placement("pl031", layout.RTC_BASE, layout.RTC_SIZE, layout.RTC_SPI)
        self.rtc = Pl031(gic.SpiLine(self.vm_fd, layout.RTC_SPI))
        self._stack.callback(self.rtc.close)
        self.bus.add(rtc_placement, self.rtc)
        self.virtio_console: VirtioConsole | None = None
        self.virtio = [self._virtio_slot(slot, make) for slot, make in enumerate(self._virtio())]
        self.console_input: Pl011 | VirtioConsole = self.virtio_console or self.uart
        entry, self.dtb = self._load()
        self._set_boot_registers(self.vcpus[0], entry, self.dtb)

    def _check_host(self, kvm: Kvm) -> None:
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

    def _vm_type(self, ram_end: int) -> int:
        limit = self.kvm.check_extension(Cap.KVM_CAP_ARM_VM_IPA_SIZE) or DEFAULT_IPA_BITS
        need = max(DEFAULT_IPA_BITS, (ram_end - 1).bit_length())
        if need > limit:
            raise UserError(
                f"--memory {self.config.memory >> 20}M needs {need}-bit guest physical "
                f"addresses; this host's KVM offers {limit} bits"
            )
        return 0 if need == DEFAULT_IPA_BITS else KVM_VM_TYPE_ARM_IPA_SIZE(need)

    def _guest_memory(self, size: int) -> GuestMemory:
        try:
            memory = GuestMemory([(layout.RAM_BASE, size)])
        except OSError as e:
            raise UserError(
                f"cannot map {size >> 20} MiB of guest RAM: {e.strerror}: lower --memory"
            ) from None
        self._stack.callback(memory.close)
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

    def _init_pmu(self) -> bool:
        """The PMU's overflow interrupt, once the vGIC is initialised (with --pmu)."""
        if not self._pmu_wanted():
            return False
        irq = ctypes.c_int(layout.PPI_BASE + layout.PMU_PPI)
        for vcpu in self.vcpus:
            vcpu.set_device_attr(KVM_ARM_VCPU_PMU_V3_CTRL, KVM_ARM_VCPU_PMU_V3_IRQ, irq)
            vcpu.set_device_attr(KVM_ARM_VCPU_PMU_V3_CTRL, KVM_ARM_VCPU_PMU_V3_INIT)
        return True

    def _virtio(self) -> list[Callable[[], VirtioDevice]]:
        """The virtio devices, in slot order (a guest numbers its disks in this order)."""
        c = self.config
        makers: list[Callable[[], VirtioDevice]] = []
        if c.console == "virtio":
            makers.append(self._make_virtio_console)
        if c.rng:
            makers.append(Rng)
        makers += [partial(Block, d.path, d.readonly) for d in c.disks]
        makers += [partial(self._make_net, n) for n in c.nets]
        if c.vsock_cid is not None:
            makers.append(partial(self._make_vsock, c.vsock_cid))
        if len(makers) > layout.VIRTIO_MMIO_SLOTS:
            raise UserError(f"{len(makers)} virtio devices: at most {layout.VIRTIO_MMIO_SLOTS}")
        if makers and fence.UNAVAILABLE:
            raise UserError(f"virtio devices need a memory barrier: {fence.UNAVAILABLE}")
        return makers

    def _make_virtio_console(self) -> VirtioConsole:
        self.virtio_console = VirtioConsole(self.console.write)
        return self.virtio_console

    @staticmethod
    def _make_net(net: NetConfig) -> Net | VhostNet:
        mac = net.mac or bytes([0x52, 0x54, 0x00, *secrets.token_bytes(3)])
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

    @staticmethod
    def _make_vsock(cid: int) -> Vsock:
        vhost = open_vhost("/dev/vhost-vsock", required=True)
        assert vhost is not None
        try:
            return Vsock(vhost, cid)
        except BaseException:
            vhost.close()
            raise

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
            self._stack.callback(line.close)
        else:
            line = gic.SpiLine(self.vm_fd, placement.spi)
        device = make()
        transport = VirtioMmio(device, self.memory, line)
        self._stack.callback(transport.close)
        if self.kvm.check_extension(Cap.KVM_CAP_IOEVENTFD):
            for index, fd in enumerate(transport.notifiers):
                self.vm_fd.ioeventfd(fd, base + Reg.VIRTIO_MMIO_QUEUE_NOTIFY, 4, index,
                                     KVM_IOEVENTFD_FLAG_DATAMATCH)  # fmt: skip
        self.bus.add(placement, transport)
        resample_fd = line.resample_fd if isinstance(line, gic.IrqfdLine) else None
        return VirtioSlot(placement, transport, resample_fd)

    def _load(self) -> tuple[int, int]:
        """Load what the guest boots, the initrd and the device tree; (entry, dtb address)."""
        guest = boot.load_guest(self.memory, self.config.boot)
        self.dtb_blob = devicetree.build(self._device_tree_spec(guest))
        self.memory.write(guest.layout.dtb, self.dtb_blob)
        return guest.loaded.entry, guest.layout.dtb

    def _device_tree_spec(self, guest: boot.Guest) -> devicetree.DeviceTreeSpec:
        return devicetree.DeviceTreeSpec(
            memory=[(r.gpa, r.size) for r in self.memory.regions],
            mpidrs=self.mpidrs,
            gic_version=self.gic.version,
            gic_regions=self.gic.regions,
            devices=self.bus.placements,
            cmdline=self.config.cmdline,
            stdout=self.uart_placement,
            initrd=guest.initrd_range,
            pmu=self.pmu,
            rng_seed=secrets.token_bytes(64),
            kaslr_seed=secrets.randbits(64),
        )

    @staticmethod
    def _set_boot_registers(vcpu: Vcpu, entry: int, dtb: int) -> None:
        """arm64 boot protocol (booting.rst): x0 = device tree, x1-x3 = 0, MMU off, EL1h."""
        vcpu.set_one_reg(regs.PSTATE, regs.BOOT_PSTATE)  # EL1h, D, A, I and F masked
        vcpu.set_one_reg(regs.PC, entry)
        vcpu.set_one_reg(regs.x(0), dtb)
        for n in (1, 2, 3):
            vcpu.set_one_reg(regs.x(n), 0)

    # --- hypercalls ------------------------------------------------------------------------

    def hypercalls_supported(self) -> bool:
        return self.vm_fd.has_device_attr(KVM_ARM_VM_SMCCC_CTRL, KVM_ARM_VM_SMCCC_FILTER)

    def register_hypercalls(self, base: int, count: int, handler: HypercallHandler) -> None:
        """Forward the SMCCC function IDs [base, base + count) to `handler` (before run()).

        The handler gets a Hypercall and returns the values for x0-x3 (an int is x0; None
        returns NOT_SUPPORTED). Needs the host kernel's SMCCC filter (Linux 6.4 or newer).
        """
        if not self.hypercalls_supported():
            raise HypercallsUnsupported(
                "this host's KVM cannot forward hypercalls to user space: it needs the SMCCC "
                "filter (KVM_ARM_VM_SMCCC_CTRL) of Linux 6.4 or newer"
            )
        if not (count > 0 and base >= 0 and base + count <= 1 << 32):
            raise ValueError(f"bad SMCCC function range: {count} from {base:#x}")
        rule = kvm_smccc_filter(base, count, KVM_SMCCC_FILTER_FWD_TO_USER)
        try:
            self.vm_fd.set_device_attr(KVM_ARM_VM_SMCCC_CTRL, KVM_ARM_VM_SMCCC_FILTER, rule)
        except KvmError as e:
            if e.errno == errno.EEXIST:
                raise ValueError(
                    f"SMCCC functions {base:#x}+{count} overlap calls KVM reserves "
                    "or a range already registered"
                ) from None
            raise
        self._hypercalls.append((base, count, handler))

    def _hypercall(self, index: int, vcpu: Vcpu) -> None:
        assert vcpu.kvm_run is not None
        info = vcpu.kvm_run.exit.hypercall
        function_id = int(info.nr)
        conduit = "smc" if info.flags & KVM_HYPERCALL_EXIT_SMC else "hvc"
        results: Sequence[int] | int | None = None
        for base, count, handler in self._hypercalls:
            if base <= function_id < base + count:
                args = tuple(vcpu.get_one_reg(regs.x(n)) for n in range(1, 7))
                try:
                    results = handler(Hypercall(function_id, args, conduit, index))
                except Exception:
                    log.exception("hypercall handler for %#x failed", function_id)
                break
        if results is None:
            results = [SMCCC_RET_NOT_SUPPORTED]
        elif isinstance(results, int):
            results = [results]
        for n, value in enumerate(list(results)[:4]):  # the guest sees x0-x3
            vcpu.set_one_reg(regs.x(n), value & 0xFFFF_FFFF_FFFF_FFFF)

    # --- running ---------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run until the guest powers off or resets, Ctrl-A x, a signal, or a failure."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("Vm.run() runs in the main thread (it handles signals)")
        self._result = None
        self._stopping = False
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_w = wake_w
        saved = {  # (SIGINT too: Python leaves it ignored when its parent ignored it)
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)
        }
        saved[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        saved[KICK_SIGNAL] = signal.signal(KICK_SIGNAL, lambda s, f: None)
        input_fd = self.console.input_fd
        try:
            with (
                raw_terminal(input_fd) if input_fd is not None else contextlib.nullcontext(),
                self._io_threads(),
            ):
                self._start_vcpus()
                try:
                    self._supervise(wake_r, input_fd)
                except KeyboardInterrupt:
                    self._finish(RunResult(Outcome.SIGNAL, 130, "interrupted"))
                except _Signalled as s:
                    self._finish(
                        RunResult(
                            Outcome.SIGNAL,
                            128 + s.signum,
                            f"stopped by {signal.Signals(s.signum).name}",
                        )
                    )
                finally:
                    self._stop_vcpus()
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)
        assert self._result is not None
        return self._result

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        raise _Signalled(signum)

    def _finish(self, result: RunResult) -> None:
        """The first ending wins; the supervisor is woken to stop everything."""
        with self._result_lock:
            if self._result is None:
                self._result = result
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")

    def _supervise(self, wake_r: int, input_fd: int | None) -> None:
        """Move console input to the UART (while it has room) until the VM ends."""
        escape = EscapeDecoder()
        with selectors.PollSelector() as sel:  # poll, unlike epoll, takes files and /dev/null
            sel.register(wake_r, selectors.EVENT_READ)
            while self._result is None:
                throttled = input_fd is not None and not self.console_input.backlog_drained.is_set()
                watched = input_fd is not None and input_fd in sel.get_map()
                if input_fd is not None and not throttled and not watched:
                    sel.register(input_fd, selectors.EVENT_READ)
                elif input_fd is not None and throttled and watched:
                    sel.unregister(input_fd)
                for key, _ in sel.select(0.05 if throttled else None):
                    if key.fd == wake_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_r, 64)
                        continue
                    data = os.read(key.fd, 4096)
                    if not data:  # end of input: the guest runs on without it
                        sel.unregister(key.fd)
                        input_fd = None
                        continue
                    data = escape.feed(data)
                    if data:
                        self.console_input.receive(data)
                    if escape.quit:
                        self._finish(RunResult(Outcome.QUIT, 0, "stopped (Ctrl-A x)"))

    @contextlib.contextmanager
    def _io_threads(self) -> Iterator[None]:
        """The virtio devices' I/O threads, for as long as the vCPUs run."""
        workers = [Worker(v.transport, v.resample_fd) for v in self.virtio]
        try:
            for worker in workers:
                worker.start()
            yield
        finally:
            for worker in workers:
                worker.stop()

    def _start_vcpus(self) -> None:
        self._threads = [
            threading.Thread(target=self._vcpu_thread, args=(i,), name=f"vcpu{i}", daemon=True)
            for i in range(len(self.vcpus))
        ]
        for thread in self._threads:
            thread.start()

    def _stop_vcpus(self) -> None:
        self._stopping = True
        for _ in range(100):
            alive = [(t, v) for t, v in zip(self._threads, self.vcpus, strict=True) if t.is_alive()]
            if not alive:
                return
            for thread, vcpu in alive:  # out of KVM_RUN now, and at once if about to enter it
                assert vcpu.kvm_run is not None
                vcpu.kvm_run.immediate_exit = 1
                with contextlib.suppress(ProcessLookupError):
                    if thread.ident is not None:
                        signal.pthread_kill(thread.ident, KICK_SIGNAL)
            for thread, _ in alive:
                thread.join(0.1)
        log.error("vCPU threads did not stop")

    def _vcpu_thread(self, index: int) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        try:
            self._vcpu_loop(index)
        except Exception:
            log.exception("vCPU %d failed", index)
            self._finish(RunResult(Outcome.FAILED, 1, f"internal error in vCPU {index}"))

    def _vcpu_loop(self, index: int) -> None:
        vcpu = self.vcpus[index]
        run = vcpu.kvm_run
        assert run is not None
        mmio = run.exit.mmio
        data = vcpu.kvm_run_view(KVM_RUN_MMIO_DATA_OFFSET, 8)
        bus_read, bus_write = self.bus.read, self.bus.write
        fd, request, ioctl = vcpu.fd, int(Ioctl.KVM_RUN), fcntl.ioctl
        exit_mmio, exit_event = ExitReason.KVM_EXIT_MMIO, ExitReason.KVM_EXIT_SYSTEM_EVENT
        if index == 0 and self.on_first_run:
            self.on_first_run(time.monotonic())
        while not self._stopping:
            try:
                ioctl(fd, request, 0)
            except OSError as e:
                if e.errno in (errno.EINTR, errno.EAGAIN):
                    continue
                self._failed(index, f"KVM_RUN failed: {os.strerror(e.errno or 0)}")
                return
            reason = run.exit_reason
            if reason == exit_mmio:
                size = mmio.len
                if mmio.is_write:
                    bus_write(mmio.phys_addr, size, int.from_bytes(data[:size], "little"))
                elif size in (1, 2, 4, 8):
                    data[:size] = (bus_read(mmio.phys_addr, size) & ((1 << 8 * size) - 1)).to_bytes(
                        size, "little"
                    )
            elif reason == exit_event:
                if self._system_event(index, run.exit.system_event.type):
                    return
            elif reason == ExitReason.KVM_EXIT_HYPERCALL:
                self._hypercall(index, vcpu)
            elif reason != ExitReason.KVM_EXIT_INTR:
                self._failed(
                    index, f"unexpected exit {self._exit_name(reason)}" + self._exit_detail(run)
                )
                return

    def _system_event(self, index: int, event: int) -> bool:
        """True when the event ends the VM."""
        if event == SystemEvent.KVM_SYSTEM_EVENT_SHUTDOWN:
            self._finish(RunResult(Outcome.POWEROFF, 0, "the guest powered off"))
        elif event == SystemEvent.KVM_SYSTEM_EVENT_RESET:
            self._finish(RunResult(Outcome.RESET, 0, "the guest reset"))
        elif event == SystemEvent.KVM_SYSTEM_EVENT_CRASH:
            self._failed(index, "the guest reported a crash (PSCI SYSTEM_EVENT_CRASH)")
        else:
            return False
        return True

    @staticmethod
    def _exit_name(reason: int) -> str:
        try:
            return ExitReason(reason).name
        except ValueError:
            return f"exit reason {reason}"

    @staticmethod
    def _exit_detail(run: kvm_run) -> str:
        if run.exit_reason == ExitReason.KVM_EXIT_FAIL_ENTRY:
            reason = run.exit.fail_entry.hardware_entry_failure_reason
            return f" (hardware entry failure reason {reason:#x})"
        if run.exit_reason == ExitReason.KVM_EXIT_INTERNAL_ERROR:
            return f" (suberror {run.exit.internal.suberror})"
        return ""

    def _failed(self, index: int, what: str) -> None:
        message = f"vCPU {index}: {what}\n{dump_registers(self.vcpus[index])}"
        self._finish(RunResult(Outcome.FAILED, 1, message))

    # --- the end ---------------------------------------------------------------------------

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Vm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dump_registers(vcpu: Vcpu) -> str:
    """The vCPU's state for a failure report (registers KVM will not give are shown as ?)."""

    def read(reg: int) -> str:
        try:
            return f"{vcpu.get_one_reg(reg):016x}"
        except KvmError:
            return "?" * 16

    named = [
        ("PC", regs.PC),
        ("PSTATE", regs.PSTATE),
        ("SP_EL1", regs.SP_EL1),
        ("SP_EL0", regs.SP_EL0),
        ("ELR_EL1", regs.ELR_EL1),
        ("ESR_EL1", regs.ESR_EL1),
        ("FAR_EL1", regs.FAR_EL1),
        ("SCTLR_EL1", regs.SCTLR_EL1),
        ("VBAR_EL1", regs.VBAR_EL1),
    ]
    lines = [
        "  " + "  ".join(f"{n:>9}={read(r)}" for n, r in named[i : i + 3])
        for i in range(0, len(named), 3)
    ]
    gprs = [f"X{n:<2}={read(regs.x(n))}" for n in range(31)]
    lines += ["  " + "  ".join(gprs[i : i + 4]) for i in range(0, 31, 4)]
    return "\n".join(lines)


def run_vm(
    config: VmConfig, console: Console | None = None, on_start: Callable[[Vm], None] | None = None
) -> RunResult:
    """Run a VM the way `elvisor run` does: a guest reset reboots it (unless config.reboot
    is off); returns how it ended."""
    while True:
        with Vm(config, console) as vm:
            if on_start:
                on_start(vm)
            result = vm.run()
        if result.outcome is not Outcome.RESET or not config.reboot:
            return result
