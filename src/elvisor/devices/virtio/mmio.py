"""The virtio-mmio transport, version 2 ("modern") register layout (virtio v1.2, 4.2.2).

The guest's driver finds the device through the device tree, negotiates features, sets up
its queues through these registers and then talks to the device through the queues alone:
queue notifications (QueueNotify) go to an eventfd per queue, which KVM signals itself when
the builder registered it as an ioeventfd; interrupts are the InterruptStatus bits and one
level-sensitive line, up while any bit is set.

Guest mistakes are contained: control registers are 32-bit only, an unknown offset reads 0,
a status change outside the state machine (`TRANSITIONS`) or a queue that breaks the rules
is refused and logged once; a broken queue marks the device DEVICE_NEEDS_RESET.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from enum import IntEnum
from typing import Any

from elvisor.devices.bus import IrqLine
from elvisor.devices.virtio.device import Activation, VirtioDevice
from elvisor.devices.virtio.guestlog import GuestLog
from elvisor.devices.virtio.queue import QueueError, SplitQueue
from elvisor.devices.virtio.spec import TRANSPORT_FEATURES, Feature, Status, bit
from elvisor.log import Log
from elvisor.memory import GuestMemory

log = Log(__name__)

MAGIC_VALUE = 0x74726976  # "virt"
VERSION = 2
VENDOR_ID = 0x454C5653  # "ELVS"
NO_SHARED_MEMORY = 0xFFFF_FFFF  # SHMLen of a region that does not exist


class Reg(IntEnum):
    """4.2.2 MMIO Device Register Layout (offsets)."""

    VIRTIO_MMIO_MAGIC_VALUE = 0x000
    VIRTIO_MMIO_VERSION = 0x004
    VIRTIO_MMIO_DEVICE_ID = 0x008
    VIRTIO_MMIO_VENDOR_ID = 0x00C
    VIRTIO_MMIO_DEVICE_FEATURES = 0x010
    VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014
    VIRTIO_MMIO_DRIVER_FEATURES = 0x020
    VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024
    VIRTIO_MMIO_QUEUE_SEL = 0x030
    VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034
    VIRTIO_MMIO_QUEUE_NUM = 0x038
    VIRTIO_MMIO_QUEUE_READY = 0x044
    VIRTIO_MMIO_QUEUE_NOTIFY = 0x050
    VIRTIO_MMIO_INTERRUPT_STATUS = 0x060
    VIRTIO_MMIO_INTERRUPT_ACK = 0x064
    VIRTIO_MMIO_STATUS = 0x070
    VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080
    VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084
    VIRTIO_MMIO_QUEUE_DRIVER_LOW = 0x090
    VIRTIO_MMIO_QUEUE_DRIVER_HIGH = 0x094
    VIRTIO_MMIO_QUEUE_DEVICE_LOW = 0x0A0
    VIRTIO_MMIO_QUEUE_DEVICE_HIGH = 0x0A4
    VIRTIO_MMIO_SHM_SEL = 0x0AC
    VIRTIO_MMIO_SHM_LEN_LOW = 0x0B0
    VIRTIO_MMIO_SHM_LEN_HIGH = 0x0B4
    VIRTIO_MMIO_SHM_BASE_LOW = 0x0B8
    VIRTIO_MMIO_SHM_BASE_HIGH = 0x0BC
    VIRTIO_MMIO_QUEUE_RESET = 0x0C0
    VIRTIO_MMIO_CONFIG_GENERATION = 0x0FC
    VIRTIO_MMIO_CONFIG = 0x100


VIRTIO_MMIO_INT_VRING = 1  # InterruptStatus: a used buffer notification
VIRTIO_MMIO_INT_CONFIG = 2  # InterruptStatus: the configuration changed

_A, _D, _F, _OK = Status.ACKNOWLEDGE, Status.DRIVER, Status.FEATURES_OK, Status.DRIVER_OK
# 3.1.1 Driver Requirements: Device Initialization. Status values the driver may move to
# from each (besides writing 0 to reset and setting FAILED at any time).
TRANSITIONS: dict[int, frozenset[int]] = {
    0: frozenset({_A}),
    _A: frozenset({_A | _D}),
    _A | _D: frozenset({_A | _D | _F}),
    _A | _D | _F: frozenset({_A | _D | _F | _OK}),
    _A | _D | _F | _OK: frozenset(),
}
DRIVER_BITS = _A | _D | _F | _OK


class Interrupt:
    """InterruptStatus and the line it drives: up while any bit is set.

    With an irqfd in resample mode, KVM drops the line when the guest ends the interrupt
    and tells us (`resampled`): if a bit is still set, the line goes up again, so an
    interrupt raised while the guest handled the last one is not lost.
    """

    def __init__(self, line: IrqLine) -> None:
        self._line = line
        self._lock = threading.Lock()
        self.status = 0

    def raise_(self, bits: int) -> None:
        with self._lock:
            self.status |= bits
            self._line.set_level(True)

    def ack(self, bits: int) -> None:
        with self._lock:
            self.status &= ~bits
            if not self.status:
                self._line.set_level(False)

    def resampled(self) -> None:
        with self._lock:
            if self.status:
                self._line.set_level(True)


class VirtioMmio:
    """One virtio-mmio slot with its device (an MmioDevice on the bus)."""

    registers = Reg  # (register names, for --trace and --stats)

    def __init__(self, device: VirtioDevice, memory: GuestMemory, line: IrqLine) -> None:
        self.device = device
        self.memory = memory
        self.interrupt = Interrupt(line)
        self.lock = threading.Lock()  # the registers and the device: vCPUs vs the I/O thread
        self.queues = [SplitQueue(memory, size) for size in device.queue_sizes]
        # one eventfd per queue: QueueNotify writes signal it (KVM itself, as an ioeventfd)
        self.notifiers = [
            os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in device.queue_sizes
        ]
        self.offered = TRANSPORT_FEATURES | device.features
        self._guest_log = GuestLog(log, f"virtio {device.device_id.name.lower()}")
        self._unwatched: set[int] = set()  # host fds not watched while the device was broken
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.driver_features = 0
        self.device_features_sel = self.driver_features_sel = 0
        self.queue_sel = 0
        self.config_generation = 0
        self.broken = False
        for queue in self.queues:
            queue.reset()

    def close(self) -> None:
        for fd in self.notifiers:
            os.close(fd)
        self.notifiers = []
        self.device.close()

    # --- snapshots (the VM paused: no vCPU or I/O thread here) ---------------------------------

    def state(self) -> dict[str, object]:
        """The transport's and its queues' state; the device is frozen until `thaw()`."""
        with self.lock:
            self.device.freeze()
            return {
                "device": self.device.device_id.name.lower(),
                "status": self.status,
                "driver_features": self.driver_features,
                "device_features_sel": self.device_features_sel,
                "driver_features_sel": self.driver_features_sel,
                "queue_sel": self.queue_sel,
                "config_generation": self.config_generation,
                "broken": self.broken,
                "interrupt_status": self.interrupt.status,
                "queues": [q.state() for q in self.queues],
            }

    def thaw(self) -> None:
        with self.lock:
            self.device.thaw()

    def set_state(self, state: dict[str, Any]) -> None:
        """Take back a `state()` into a transport with the same device, not yet used: the
        queues mapped again, the device activated if the driver had it running, the
        interrupt line as it was. QueueError (or KeyError, ValueError) if it cannot be."""
        kind = self.device.device_id.name.lower()
        if state["device"] != kind:
            raise ValueError(f"the state of a virtio {state['device']} device, for a {kind}")
        queues = state["queues"]
        if len(queues) != len(self.queues):
            raise ValueError(f"{len(queues)} queues, for a device with {len(self.queues)}")
        with self.lock:
            self.status = int(state["status"]) & 0xFF
            self.driver_features = int(state["driver_features"]) & self.offered
            self.device_features_sel = int(state["device_features_sel"])
            self.driver_features_sel = int(state["driver_features_sel"])
            self.queue_sel = int(state["queue_sel"])
            self.config_generation = int(state["config_generation"])
            self.broken = bool(state["broken"])
            for queue, queue_state in zip(self.queues, queues, strict=True):
                queue.set_state(queue_state)
            if self.status & _OK and not self.broken:
                self._activate()
                self.device.restored()
        if status := int(state["interrupt_status"]) & (
            VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG
        ):
            self.interrupt.raise_(status)

    # --- guest register accesses (vCPU threads) -----------------------------------------------

    def mmio_read(self, offset: int, size: int) -> int:
        if offset >= Reg.VIRTIO_MMIO_CONFIG:
            return self._config_read(offset - Reg.VIRTIO_MMIO_CONFIG, size)
        if size != 4 or offset % 4:
            self._guest_error(f"read of {size} bytes at {offset:#x}: registers are 32-bit")
            return 0
        if offset == Reg.VIRTIO_MMIO_INTERRUPT_STATUS:
            return self.interrupt.status
        with self.lock:
            return self._read_register(offset)

    def _read_register(self, offset: int) -> int:
        queue = self._selected()
        match offset:
            case Reg.VIRTIO_MMIO_MAGIC_VALUE:
                return MAGIC_VALUE
            case Reg.VIRTIO_MMIO_VERSION:
                return VERSION
            case Reg.VIRTIO_MMIO_DEVICE_ID:
                return int(self.device.device_id)
            case Reg.VIRTIO_MMIO_VENDOR_ID:
                return VENDOR_ID
            case Reg.VIRTIO_MMIO_DEVICE_FEATURES:
                sel = self.device_features_sel
                return (self.offered >> (32 * sel)) & 0xFFFF_FFFF if sel < 2 else 0
            case Reg.VIRTIO_MMIO_QUEUE_NUM_MAX:
                return queue.max_size if queue else 0
            case Reg.VIRTIO_MMIO_QUEUE_READY:
                return int(queue.ready) if queue else 0
            case Reg.VIRTIO_MMIO_STATUS:
                return self.status
            case Reg.VIRTIO_MMIO_SHM_LEN_LOW | Reg.VIRTIO_MMIO_SHM_LEN_HIGH:
                return NO_SHARED_MEMORY
            case Reg.VIRTIO_MMIO_CONFIG_GENERATION:
                return self.config_generation
        return 0  # write-only, reserved or unknown: reads as zero

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if offset >= Reg.VIRTIO_MMIO_CONFIG:
            self._config_write(offset - Reg.VIRTIO_MMIO_CONFIG, size, value)
            return
        if size != 4 or offset % 4:
            self._guest_error(f"write of {size} bytes at {offset:#x}: registers are 32-bit")
            return
        if offset == Reg.VIRTIO_MMIO_QUEUE_NOTIFY:  # (when no ioeventfd took it)
            if value < len(self.notifiers):
                os.eventfd_write(self.notifiers[value], 1)
            return
        if offset == Reg.VIRTIO_MMIO_INTERRUPT_ACK:
            self.interrupt.ack(value)
            return
        with self.lock:
            self._write_register(offset, value)

    def _write_register(self, offset: int, value: int) -> None:
        match offset:
            case Reg.VIRTIO_MMIO_DEVICE_FEATURES_SEL:
                self.device_features_sel = value
            case Reg.VIRTIO_MMIO_DRIVER_FEATURES_SEL:
                self.driver_features_sel = value
            case Reg.VIRTIO_MMIO_DRIVER_FEATURES:
                self._driver_features(value)
            case Reg.VIRTIO_MMIO_QUEUE_SEL:
                self.queue_sel = value
            case Reg.VIRTIO_MMIO_STATUS:
                self._set_status(value)
            case (
                Reg.VIRTIO_MMIO_QUEUE_NUM
                | Reg.VIRTIO_MMIO_QUEUE_READY
                | Reg.VIRTIO_MMIO_QUEUE_DESC_LOW
                | Reg.VIRTIO_MMIO_QUEUE_DESC_HIGH
                | Reg.VIRTIO_MMIO_QUEUE_DRIVER_LOW
                | Reg.VIRTIO_MMIO_QUEUE_DRIVER_HIGH
                | Reg.VIRTIO_MMIO_QUEUE_DEVICE_LOW
                | Reg.VIRTIO_MMIO_QUEUE_DEVICE_HIGH
            ):
                self._queue_register(Reg(offset), value)
            case _:
                self._guest_error(f"write of {value:#x} to {offset:#x}: not a writable register")

    def _driver_features(self, value: int) -> None:
        if self.status & _F or not self.status & _D:
            self._guest_error("driver features written outside feature negotiation")
            return
        if self.driver_features_sel < 2:
            shift = 32 * self.driver_features_sel
            self.driver_features &= ~(0xFFFF_FFFF << shift)
            self.driver_features |= value << shift

    def _selected(self) -> SplitQueue | None:
        return self.queues[self.queue_sel] if self.queue_sel < len(self.queues) else None

    def _queue_register(self, offset: Reg, value: int) -> None:
        queue = self._selected()
        if queue is not None and offset == Reg.VIRTIO_MMIO_QUEUE_READY and value == 0:
            queue.ready = False  # 4.2.3.2: the driver stops using the queue
            return
        if queue is None or queue.ready or not self.status & _F:
            self._guest_error(f"{offset.name} written while queue {self.queue_sel} is not set up")
            return
        match offset:
            case Reg.VIRTIO_MMIO_QUEUE_NUM:
                queue.size = value
            case Reg.VIRTIO_MMIO_QUEUE_DESC_LOW | Reg.VIRTIO_MMIO_QUEUE_DESC_HIGH:
                queue.desc_addr = _half(queue.desc_addr, offset & 4, value)
            case Reg.VIRTIO_MMIO_QUEUE_DRIVER_LOW | Reg.VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
                queue.avail_addr = _half(queue.avail_addr, offset & 4, value)
            case Reg.VIRTIO_MMIO_QUEUE_DEVICE_LOW | Reg.VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
                queue.used_addr = _half(queue.used_addr, offset & 4, value)
            case Reg.VIRTIO_MMIO_QUEUE_READY if value == 1:
                try:
                    queue.activate()
                except QueueError as e:
                    self._needs_reset(f"queue {self.queue_sel}: {e}")
            case Reg.VIRTIO_MMIO_QUEUE_READY:
                self._guest_error(f"QueueReady written with {value:#x}")

    def _set_status(self, value: int) -> None:
        if value == 0:
            self._device_reset()
            return
        wanted = value & DRIVER_BITS
        current = self.status & DRIVER_BITS
        if value & Status.FAILED:
            self.status |= Status.FAILED
        if wanted == current:
            return
        if wanted not in TRANSITIONS.get(current, ()):
            self._guest_error(f"device status {current:#x} -> {wanted:#x} is not allowed")
            return
        if wanted & _F and not current & _F and not self._features_acceptable():
            return  # FEATURES_OK stays clear: the driver sees its features were refused
        self.status = (self.status & ~DRIVER_BITS) | wanted
        if wanted & _OK:
            self._serve(self._activate)

    def _features_acceptable(self) -> bool:
        features = self.driver_features
        if features & ~self.offered or not features & bit(Feature.VIRTIO_F_VERSION_1):
            self._guest_error(f"driver features {features:#x} refused (offered {self.offered:#x})")
            return False
        for queue in self.queues:
            queue.event_idx = bool(features & bit(Feature.VIRTIO_F_EVENT_IDX))
            queue.indirect = bool(features & bit(Feature.VIRTIO_F_INDIRECT_DESC))
        return True

    def _activate(self) -> None:
        self.device.activate(
            Activation(
                self.memory,
                self.queues,
                self.driver_features,
                self.notifiers,
                lambda: self.interrupt.raise_(VIRTIO_MMIO_INT_VRING),
                self._config_changed,
                lambda index: os.eventfd_write(self.notifiers[index], 1),
            )
        )
        for fd in self.notifiers:  # serve what the driver queued before DRIVER_OK
            os.eventfd_write(fd, 1)

    def _device_reset(self) -> None:
        if self.device.active:
            self.device.reset()
        self._reset()
        self.interrupt.ack(VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG)

    # --- the configuration space --------------------------------------------------------------

    def _config_read(self, offset: int, size: int) -> int:
        with self.lock:
            space = self.device.config_space()
        if offset + size > len(space) or size not in (1, 2, 4, 8):
            return 0
        return int.from_bytes(space[offset : offset + size], "little")

    def _config_write(self, offset: int, size: int, value: int) -> None:
        with self.lock:
            self.device.config_write(offset, value.to_bytes(size, "little"))

    def _config_changed(self) -> None:
        self.config_generation = (self.config_generation + 1) & 0xFFFF_FFFF
        self.interrupt.raise_(VIRTIO_MMIO_INT_CONFIG)

    # --- the I/O thread ----------------------------------------------------------------------

    def notified(self, index: int) -> None:
        """Queue `index` was kicked (its eventfd fired): let the device serve it. (DRIVER_OK
        kicks every queue: the first of these kicks after a reset watches again what the
        broken device stopped watching.)"""
        with self.lock:
            if self.device.active and not self.broken and self.queues[index].ready:
                while self._unwatched:
                    self.device.watch(self._unwatched.pop(), True)
                self._serve(lambda: self.device.queue_notified(index))

    def readable(self, fd: int, callback: Callable[[], None]) -> None:
        """A host fd the device watches is readable (a broken device stops watching it,
        until the driver has reset it and set it up again)."""
        with self.lock:
            if self.broken:
                self.device.watch(fd, False)
                self._unwatched.add(fd)
            else:
                self._serve(callback)

    def signalled(self, callback: Callable[[], None]) -> None:
        """An eventfd of the device's was signalled (and reset)."""
        with self.lock:
            if not self.broken:
                self._serve(callback)

    def _serve(self, work: Callable[[], None]) -> None:
        try:
            work()
        except QueueError as e:
            self._needs_reset(str(e))
        except Exception as e:  # a bug in a device model: the device stops, the VM goes on
            log.exception("virtio %s failed", self.device.device_id.name.lower())
            self._needs_reset(f"internal error: {e}")

    def _needs_reset(self, why: str) -> None:
        self._guest_error(f"{why}: the device needs a reset")
        self.broken = True
        if self.status & _OK:
            self.status |= Status.DEVICE_NEEDS_RESET
            self._config_changed()

    def _guest_error(self, what: str) -> None:
        self._guest_log.warning(what)


def _half(current: int, high: int, value: int) -> int:
    """Replace the low (high == 0) or high 32 bits of a 64-bit register."""
    if high:
        return (current & 0xFFFF_FFFF) | (value << 32)
    return (current & ~0xFFFF_FFFF) | value
