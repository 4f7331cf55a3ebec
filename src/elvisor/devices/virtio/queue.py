"""Split virtqueues (virtio v1.2, 2.7), device side, over guest memory.

The driver owns the descriptor table and the available ring, the device the used ring. A
guest can put anything in them, so every rule the device relies on is checked, and a broken
one raises `QueueError` (the transport then marks the device DEVICE_NEEDS_RESET):

- a head or `next` index outside its table, a chain longer than the queue (which is how a
  loop shows), an indirect table inside an indirect table or one that also sets NEXT, a
  readable descriptor after a writable one (2.7.4.2), a chain over 4 GiB;
- every buffer is checked over its whole span against guest RAM (`GuestMemory.view`);
- the available index may run at most the queue size ahead of the device (2.7.6).

Ring fields shared with the running guest are read and written through 16/32-bit
memoryview casts, so each is one load or store, never torn; `fence()` orders them where
the spec asks for a barrier (2.7.7.2, 2.7.10).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from elvisor.fence import fence
from elvisor.memory import GuestMemory, GuestMemoryError

VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
VIRTQ_USED_F_NO_NOTIFY = 1
MAX_QUEUE_SIZE = 32768  # 2.7: the largest split queue
MAX_CHAIN_BYTES = (1 << 32) - 1  # the used ring's len field is 32 bits

DESCRIPTOR = struct.Struct("<QIHH")  # addr, len, flags, next (2.7.5)


class QueueError(Exception):
    """The driver broke the rules of the queue; the device cannot go on without a reset."""


@dataclass(slots=True)
class Chain:
    """A descriptor chain popped from the available ring: its buffers as views of guest RAM."""

    head: int
    readable: list[memoryview] = field(default_factory=list)  # device reads (driver -> device)
    writable: list[memoryview] = field(default_factory=list)  # device writes (device -> driver)

    @property
    def readable_bytes(self) -> int:
        return sum(len(v) for v in self.readable)

    @property
    def writable_bytes(self) -> int:
        return sum(len(v) for v in self.writable)

    def read(self, limit: int) -> bytes:
        """Up to `limit` bytes from the start of the readable buffers (a copy)."""
        return b"".join(bytes(v) for v in split(self.readable, limit)[0])

    def write(self, data: bytes | memoryview) -> int:
        """Copy `data` into the writable buffers from their start; the bytes written."""
        done = 0
        for view in self.writable:
            if done == len(data):
                break
            n = min(len(view), len(data) - done)
            view[:n] = data[done : done + n]
            done += n
        return done


def split(views: Iterable[memoryview], n: int) -> tuple[list[memoryview], list[memoryview]]:
    """Cut a list of buffers after `n` bytes: (the first n bytes, the rest)."""
    head: list[memoryview] = []
    tail: list[memoryview] = []
    for view in views:
        if n >= len(view):
            head.append(view)
            n -= len(view)
        elif n > 0:
            head.append(view[:n])
            tail.append(view[n:])
            n = 0
        else:
            tail.append(view)
    return head, tail


def need_event(event: int, new: int, old: int) -> bool:
    """2.7.10: has the index moved past `event` going from `old` to `new` (mod 2^16)?"""
    return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF


class SplitQueue:
    """One virtqueue: configured by the driver through the transport, then served."""

    def __init__(self, memory: GuestMemory, max_size: int) -> None:
        if not 0 < max_size <= MAX_QUEUE_SIZE or max_size & (max_size - 1):
            raise ValueError(f"queue size {max_size} is not a power of 2 up to {MAX_QUEUE_SIZE}")
        self.memory = memory
        self.max_size = max_size
        self.event_idx = False  # VIRTIO_F_EVENT_IDX negotiated
        self.indirect = False  # VIRTIO_F_INDIRECT_DESC negotiated
        self.served = 0  # chains returned, for metrics (across resets)
        self.bytes_used = 0  # bytes written into them
        self.reset()

    def reset(self) -> None:
        self.size = self.max_size
        self.desc_addr = self.avail_addr = self.used_addr = 0
        self.ready = False
        self.next_avail = 0  # the next available-ring entry the device reads
        self.next_used = 0  # the next used-ring entry the device fills
        self._published = 0  # the used index the driver can see
        self._avail_idx = 0  # the driver's available index, as last read

    # --- snapshots -------------------------------------------------------------------------

    def state(self) -> dict[str, int | bool]:
        return {
            "size": self.size, "desc": self.desc_addr, "avail": self.avail_addr,
            "used": self.used_addr, "ready": self.ready, "next_avail": self.next_avail,
            "next_used": self.next_used, "published": self._published,
            "event_idx": self.event_idx, "indirect": self.indirect,
        }  # fmt: skip

    def set_state(self, state: dict[str, int | bool]) -> None:
        """Take back a `state()`; a ready queue is checked and mapped again (QueueError)."""
        self.reset()
        self.size = int(state["size"])
        self.desc_addr, self.avail_addr = int(state["desc"]), int(state["avail"])
        self.used_addr = int(state["used"])
        self.event_idx, self.indirect = bool(state["event_idx"]), bool(state["indirect"])
        if state["ready"]:
            self.activate()
            self.next_avail = int(state["next_avail"]) & 0xFFFF
            self.next_used = int(state["next_used"]) & 0xFFFF
            self._published = int(state["published"]) & 0xFFFF
            self._avail_idx = self.next_avail

    # --- set up ----------------------------------------------------------------------------

    def activate(self) -> None:
        """Check the driver's layout (2.7: sizes and alignments) and map the three parts."""
        size = self.size
        if not 0 < size <= self.max_size or size & (size - 1):
            raise QueueError(f"queue size {size}: not a power of 2 up to {self.max_size}")
        for name, addr, align in (
            ("descriptor table", self.desc_addr, 16),
            ("available ring", self.avail_addr, 2),
            ("used ring", self.used_addr, 4),
        ):
            if addr % align:
                raise QueueError(f"{name} at {addr:#x} is not aligned to {align} bytes")
        try:
            self._desc = self.memory.view(self.desc_addr, 16 * size)
            # flags, idx, ring[size], used_event
            self._avail = self.memory.view(self.avail_addr, 6 + 2 * size).cast("H")
            used = self.memory.view(self.used_addr, 6 + 8 * size)
        except GuestMemoryError as e:
            raise QueueError(str(e)) from None
        self._used = used.cast("H")  # flags, idx, ..., avail_event (halfword 2 + 4 * size)
        self._used_ring = used[4 : 4 + 8 * size].cast("I")  # id, len pairs
        self.ready = True

    def host_rings(self) -> tuple[int, int, int]:
        """Where the descriptor table, used ring and available ring of a ready queue are in
        this process (for the kernel's vhost, which takes them in this order)."""
        m, size = self.memory, self.size
        return (
            m.host_address(self.desc_addr, 16 * size),
            m.host_address(self.used_addr, 6 + 8 * size),
            m.host_address(self.avail_addr, 6 + 2 * size),
        )

    # --- the available side ----------------------------------------------------------------

    def pop(self) -> Chain | None:
        """The next chain the driver made available, or None."""
        if self.next_avail == self._avail_idx:
            self._avail_idx = self._avail[1]
            pending = (self._avail_idx - self.next_avail) & 0xFFFF
            if pending == 0:
                return None
            if pending > self.size:
                raise QueueError(f"available index {self._avail_idx} is {pending} entries ahead")
            fence()  # read the ring entries after the index that published them
        head = self._avail[2 + self.next_avail % self.size]
        self.next_avail = (self.next_avail + 1) & 0xFFFF
        return self._chain(head)

    def undo_pop(self) -> None:
        """Give back the chain just popped (the device had nothing for it after all)."""
        self.next_avail = (self.next_avail - 1) & 0xFFFF

    def _chain(self, head: int) -> Chain:
        chain = Chain(head)
        table, count, limit = self._desc, self.size, self.size
        index, seen, nested = head, 0, False
        total = 0
        while True:
            if index >= count:
                raise QueueError(f"descriptor {index} is outside a table of {count}")
            seen += 1
            if seen > limit:
                raise QueueError(f"chain from {head} is longer than {limit}: a loop?")
            addr, length, flags, next_index = DESCRIPTOR.unpack_from(table, 16 * index)
            if flags & VIRTQ_DESC_F_INDIRECT:
                if not self.indirect or nested:
                    raise QueueError(f"descriptor {index}: an indirect table not allowed here")
                if flags & VIRTQ_DESC_F_NEXT:
                    raise QueueError(f"descriptor {index}: indirect and NEXT together")
                if length == 0 or length % 16 or length // 16 > self.size:
                    raise QueueError(f"indirect table of {length} bytes")
                table = self._view(addr, length)
                count = limit = length // 16
                index, seen, nested = 0, 0, True
                continue
            total += length
            if total > MAX_CHAIN_BYTES:
                raise QueueError(f"chain from {head} is over 4 GiB")
            view = self._view(addr, length)
            if flags & VIRTQ_DESC_F_WRITE:
                chain.writable.append(view)
            elif chain.writable:
                raise QueueError(f"chain from {head}: a readable buffer after a writable one")
            else:
                chain.readable.append(view)
            if not flags & VIRTQ_DESC_F_NEXT:
                return chain
            index = next_index

    def _view(self, addr: int, length: int) -> memoryview:
        try:
            return self.memory.view(addr, length)
        except GuestMemoryError as e:
            raise QueueError(str(e)) from None

    # --- the used side ---------------------------------------------------------------------

    def push(self, head: int, written: int) -> None:
        """Return a chain to the driver, `written` bytes filled in (seen at `publish()`)."""
        slot = 2 * (self.next_used % self.size)
        self._used_ring[slot] = head
        self._used_ring[slot + 1] = written
        self.next_used = (self.next_used + 1) & 0xFFFF
        self.served += 1
        self.bytes_used += written

    def publish(self) -> bool:
        """Show the driver the chains pushed so far; True if it wants an interrupt for them."""
        old, new = self._published, self.next_used
        if old == new:
            return False
        fence()  # the used entries before the index (2.7.8.2)
        self._used[1] = new
        self._published = new
        fence()  # the index before reading whether the driver wants to hear of it
        if self.event_idx:
            return need_event(self._avail[2 + self.size], new, old)
        return not self._avail[0] & VIRTQ_AVAIL_F_NO_INTERRUPT

    # --- notification suppression (2.7.7, 2.7.10) --------------------------------------------

    def disable_notifications(self) -> None:
        """While the device is busy with the queue anyway, the driver need not kick it."""
        if not self.event_idx:
            self._used[0] = VIRTQ_USED_F_NO_NOTIFY

    def enable_notifications(self) -> bool:
        """Ask for kicks again; True if more chains came meanwhile (serve them first)."""
        if self.event_idx:
            self._used[2 + 4 * self.size] = self.next_avail  # avail_event
        else:
            self._used[0] = 0
        fence()  # the request before looking again (or a kick could be lost)
        return self._avail[1] != self.next_avail
