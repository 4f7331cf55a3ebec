"""The guest's side of a virtio-mmio device, as Linux's virtio_mmio and virtio_ring do it,
for driving device models on the host. Register offsets and bits are literal values from the
virtio 1.2 specification, not imported from the code under test."""

from __future__ import annotations

import os
import struct

from elvisor.memory import GuestMemory

RAM_BASE = 0x4000_0000
RAM_SIZE = 16 << 20

# 4.2.2 MMIO Device Register Layout
MAGIC, VERSION, DEVICE_ID = 0x000, 0x004, 0x008
DEVICE_FEATURES, DEVICE_FEATURES_SEL = 0x010, 0x014
DRIVER_FEATURES, DRIVER_FEATURES_SEL = 0x020, 0x024
QUEUE_SEL, QUEUE_NUM_MAX, QUEUE_NUM, QUEUE_READY = 0x030, 0x034, 0x038, 0x044
QUEUE_NOTIFY, INTERRUPT_STATUS, INTERRUPT_ACK, STATUS = 0x050, 0x060, 0x064, 0x070
QUEUE_DESC, QUEUE_DRIVER, QUEUE_DEVICE = 0x080, 0x090, 0x0A0
CONFIG_GENERATION, CONFIG = 0x0FC, 0x100
# 2.1 status bits
ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK, NEEDS_RESET, FAILED = 1, 2, 4, 8, 64, 128
# 6 reserved feature bits
F_INDIRECT_DESC, F_EVENT_IDX, F_VERSION_1 = 1 << 28, 1 << 29, 1 << 32
# 2.7.5 descriptor flags
NEXT, WRITE, INDIRECT = 1, 2, 4


class FakeLine:
    def __init__(self) -> None:
        self.level = False
        self.raised = 0

    def set_level(self, level: bool) -> None:
        self.raised += level and not self.level
        self.level = level


def guest_memory() -> GuestMemory:
    return GuestMemory([(RAM_BASE, RAM_SIZE)])


class Allocator:
    """Guest RAM handed out from the top of the region down (the device's data buffers)."""

    def __init__(self, top: int = RAM_BASE + RAM_SIZE) -> None:
        self.top = top

    def __call__(self, size: int, align: int = 16) -> int:
        self.top = (self.top - size) // align * align
        return self.top


class DriverQueue:
    def __init__(self, memory: GuestMemory, alloc: Allocator, size: int) -> None:
        self.memory, self.alloc, self.size = memory, alloc, size
        self.desc = alloc(16 * size, 16)
        self.avail = alloc(6 + 2 * size, 2)
        self.used = alloc(6 + 8 * size, 4)
        for addr, length in ((self.desc, 16 * size), (self.avail, 6 + 2 * size)):
            memory.write(addr, bytes(length))
        memory.write(self.used, bytes(6 + 8 * size))
        self.free = list(range(size))
        self.avail_idx = 0
        self.last_used = 0
        self.buffers: dict[int, list[tuple[int, int]]] = {}  # head -> writable (addr, len)
        self.slots: dict[int, list[int]] = {}  # head -> the descriptors its chain took

    def write_desc(self, table: int, index: int, addr: int, length: int, flags: int, nxt: int):
        self.memory.write(table + 16 * index, struct.pack("<QIHH", addr, length, flags, nxt))

    def add(self, out: list[bytes], in_lens: list[int], indirect: bool = False) -> int:
        """Make a chain available: `out` buffers the device reads, `in_lens` it writes."""
        parts: list[tuple[int, int, int]] = []
        for data in out:
            addr = self.alloc(max(len(data), 1))
            self.memory.write(addr, data)
            parts.append((addr, len(data), 0))
        for length in in_lens:
            addr = self.alloc(max(length, 1))
            self.memory.write(addr, bytes(length))
            parts.append((addr, length, WRITE))
        return self.add_buffers(parts, indirect)

    def add_buffers(self, parts: list[tuple[int, int, int]], indirect: bool = False) -> int:
        """Make a chain of (address, length, flags) buffers available, as they are (they may
        overlap: a hostile driver's chains)."""
        if indirect:
            table = self.alloc(16 * len(parts))
            for i, (addr, length, flags) in enumerate(parts):
                more = NEXT if i + 1 < len(parts) else 0
                self.write_desc(table, i, addr, length, flags | more, i + 1)
            head = self.free.pop(0)
            self.write_desc(self.desc, head, table, 16 * len(parts), INDIRECT, 0)
            self.slots[head] = [head]
        else:
            slots = [self.free.pop(0) for _ in parts]
            for i, (addr, length, flags) in enumerate(parts):
                more = NEXT if i + 1 < len(parts) else 0
                nxt = slots[i + 1] if more else 0
                self.write_desc(self.desc, slots[i], addr, length, flags | more, nxt)
            head = slots[0]
            self.slots[head] = slots
        self.buffers[head] = [(a, n) for a, n, f in parts if f & WRITE]
        self.publish(head)
        return head

    def publish(self, head: int) -> None:
        self.memory.write(
            self.avail + 4 + 2 * (self.avail_idx % self.size), struct.pack("<H", head)
        )
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.memory.write(self.avail + 2, struct.pack("<H", self.avail_idx))

    def used_idx(self) -> int:
        return struct.unpack("<H", self.memory.read(self.used + 2, 2))[0]

    def take_used(self, read: bool = True) -> list[tuple[int, int, list[bytes]]]:
        """The chains the device returned since last time: (head, length, writable data;
        unless `read` is off); their descriptors are free again."""
        done = []
        while self.last_used != self.used_idx():
            slot = self.used + 4 + 8 * (self.last_used % self.size)
            head, length = struct.unpack("<II", self.memory.read(slot, 8))
            buffers = self.buffers.pop(head)
            self.free += self.slots.pop(head)
            data = [self.memory.read(a, n) for a, n in buffers] if read else []
            done.append((head, length, data))
            self.last_used = (self.last_used + 1) & 0xFFFF
        return done

    def set_used_event(self, value: int) -> None:
        self.memory.write(self.avail + 4 + 2 * self.size, struct.pack("<H", value))

    def avail_event(self) -> int:
        return struct.unpack("<H", self.memory.read(self.used + 4 + 8 * self.size, 2))[0]

    def used_flags(self) -> int:
        return struct.unpack("<H", self.memory.read(self.used, 2))[0]


class Driver:
    def __init__(self, transport, memory: GuestMemory) -> None:
        self.transport, self.memory = transport, memory
        self.alloc = Allocator()
        self.queues: list[DriverQueue] = []

    def read(self, offset: int, size: int = 4) -> int:
        return self.transport.mmio_read(offset, size)

    def write(self, offset: int, value: int, size: int = 4) -> None:
        self.transport.mmio_write(offset, size, value)

    def device_features(self) -> int:
        self.write(DEVICE_FEATURES_SEL, 0)
        low = self.read(DEVICE_FEATURES)
        self.write(DEVICE_FEATURES_SEL, 1)
        return low | self.read(DEVICE_FEATURES) << 32

    def negotiate(self, features: int | None = None) -> int:
        """Reset, then ACKNOWLEDGE, DRIVER, features, FEATURES_OK; the status read back."""
        self.write(STATUS, 0)
        self.write(STATUS, ACKNOWLEDGE)
        self.write(STATUS, ACKNOWLEDGE | DRIVER)
        features = self.device_features() if features is None else features
        for sel in (0, 1):
            self.write(DRIVER_FEATURES_SEL, sel)
            self.write(DRIVER_FEATURES, (features >> (32 * sel)) & 0xFFFF_FFFF)
        self.write(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK)
        return self.read(STATUS)

    def setup_queue(self, index: int, size: int | None = None) -> DriverQueue:
        self.write(QUEUE_SEL, index)
        size = size or self.read(QUEUE_NUM_MAX)
        queue = DriverQueue(self.memory, self.alloc, size)
        self.write(QUEUE_NUM, size)
        for reg, addr in ((QUEUE_DESC, queue.desc), (QUEUE_DRIVER, queue.avail),
                          (QUEUE_DEVICE, queue.used)):  # fmt: skip
            self.write(reg, addr & 0xFFFF_FFFF)
            self.write(reg + 4, addr >> 32)
        self.write(QUEUE_READY, 1)
        self.queues.append(queue)
        return queue

    def start(self, features: int | None = None) -> list[DriverQueue]:
        """The whole initialisation (3.1.1), every queue set up; the driver's queues."""
        assert self.negotiate(features) & FEATURES_OK
        self.queues = []
        index = 0
        while True:
            self.write(QUEUE_SEL, index)
            if not self.read(QUEUE_NUM_MAX):
                break
            self.setup_queue(index)
            index += 1
        self.write(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
        self.serve_kicks()
        return self.queues

    def kick(self, index: int) -> None:
        """QueueNotify, then what the I/O thread does when the queue's eventfd fires."""
        self.write(QUEUE_NOTIFY, index)
        self.serve_kicks()

    def serve_kicks(self) -> None:
        for index, fd in enumerate(self.transport.notifiers):
            try:
                os.eventfd_read(fd)
            except BlockingIOError:
                continue
            self.transport.notified(index)

    def ack_interrupt(self) -> int:
        status = self.read(INTERRUPT_STATUS)
        self.write(INTERRUPT_ACK, status)
        return status
