"""Property-based tests: hostile guests against the virtqueue, the transport and each device.

What a guest controls is generated at random and with malice: descriptor tables with loops,
chains over the end of RAM, nested indirect tables, registers written in any order with any
width, and well-formed chains that are hostile all the same (buffers aliasing each other and
the rings, lengths up to 1 MiB, as many descriptors as the queue holds). Every case must:

- raise nothing from the transport, and log no internal error (the transport turns a
  device's exception into DEVICE_NEEDS_RESET: here that is a bug, not a guest's mistake);
- raise nothing but QueueError from the queue;
- never touch memory outside the guest, never loop without bound;
- cost the host little: its peak memory may grow by at most MEMORY_BUDGET (measured), and
  a case running past HANG_GUARD seconds is stopped as a hang (a guard against unbounded
  loops, a hundred times what any case takes, not a speed measurement).

`make test` runs a few thousand cases (the "ci" profile); `make fuzz` over 100 000.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import struct
from collections.abc import Iterator

import pytest
from budget import peak, restart_peak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_virtio_net import FakePasst, FakeTun
from virtio_driver import WRITE, Driver, FakeLine

from elvisor.devices.vhost import VhostError
from elvisor.devices.virtio.block import Block
from elvisor.devices.virtio.console import VirtioConsole
from elvisor.devices.virtio.mmio import VirtioMmio
from elvisor.devices.virtio.net import Net
from elvisor.devices.virtio.queue import QueueError, SplitQueue
from elvisor.devices.virtio.rng import Rng
from elvisor.devices.virtio.vhost_net import VhostNet
from elvisor.devices.virtio.vsock import Vsock
from elvisor.memory import GuestMemory

RAM = 0x4000_0000
RAM_SIZE = 8 << 20
TABLE, AVAIL, USED, DATA = RAM, RAM + 0x4000, RAM + 0x8000, RAM + 0x20000  # (1024 entries)
MEMORY_BUDGET = 16 << 20  # bytes of host peak memory a case may add (its guest RAM aside)
HANG_GUARD = 30  # seconds
BUFFER_MAX = 1 << 20
INDIRECT_DESC = 1 << 28  # VIRTIO_F_INDIRECT_DESC (virtio 1.2, 6)
RINGS_AREA = 1 << 20  # at the top of RAM: the driver's rings and indirect tables

# addresses a hostile driver would try: inside RAM, at its edges, below it, far beyond it
addresses = st.one_of(
    st.integers(DATA, RAM + RAM_SIZE),
    st.sampled_from([0, RAM - 1, RAM + RAM_SIZE - 1, RAM + RAM_SIZE, 2**64 - 1, 2**63]),
    st.integers(0, 2**64 - 1),
)
lengths = st.one_of(st.integers(0, 4096), st.sampled_from([2**32 - 1, 2**31, RAM_SIZE]))
flags = st.integers(0, 7) | st.integers(0, 0xFFFF)
descriptors = st.tuples(addresses, lengths, flags, st.integers(0, 0xFFFF))


@pytest.fixture(scope="module")
def guest_ram() -> Iterator[GuestMemory]:
    """One guest RAM for all the cases, every page touched once: what a case adds to the
    host's memory is then its own doing, not guest pages coming in."""
    memory = GuestMemory([(RAM, RAM_SIZE)])
    memory.write(RAM, b"\xff" * RAM_SIZE)
    yield memory
    memory.close()


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _hung(signum, frame):
    raise AssertionError(f"the case ran over {HANG_GUARD} s: an unbounded loop?")


@contextlib.contextmanager
def within_budget() -> Iterator[None]:
    """The case's bounds: no internal error logged, the host's peak memory, a hang guard."""
    errors = _Errors()
    logger = logging.getLogger("elvisor")
    logger.addHandler(errors)
    previous = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(HANG_GUARD)
    before = restart_peak()
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        logger.removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]
    growth = peak() - before
    assert growth <= MEMORY_BUDGET, f"the host's peak memory grew by {growth >> 20} MiB"


def fresh(memory: GuestMemory) -> GuestMemory:
    memory.zero(RAM, RAM_SIZE)
    return memory


def write_table(mem: GuestMemory, at: int, entries: list[tuple[int, int, int, int]]) -> None:
    for i, entry in enumerate(entries):
        mem.write(at + 16 * i, struct.pack("<QIHH", *entry))


# --- the queue alone ---------------------------------------------------------------------------


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    size=st.sampled_from([1, 2, 4, 16, 256, 1024]),
    table=st.lists(descriptors, min_size=16, max_size=16),
    indirect_table=st.lists(descriptors, max_size=20),
    heads=st.lists(st.integers(0, 0xFFFF), min_size=16, max_size=16),
    avail_idx=st.integers(0, 0xFFFF),
    negotiated=st.tuples(st.booleans(), st.booleans()),
)
def test_queue_pops_only_sound_chains(
    guest_ram, size, table, indirect_table, heads, avail_idx, negotiated
):
    mem = fresh(guest_ram)
    with within_budget():
        # odd descriptors with INDIRECT point at the indirect table, as a driver would; the
        # 16 repeat through a table of `size`
        table = [
            (DATA + 0x8000, 16 * len(indirect_table), *rest) if rest[0] & 4 and i % 2 else d
            for i, (d, rest) in enumerate((d, d[2:]) for d in table)
        ]
        write_table(mem, TABLE, [table[i % 16] for i in range(size)])
        write_table(mem, DATA + 0x8000, indirect_table)
        mem.write(AVAIL, struct.pack("<HH", 0, avail_idx))
        mem.write(AVAIL + 4, struct.pack(f"<{size}H", *(heads[i % 16] for i in range(size))))
        queue = SplitQueue(mem, 1024)
        queue.size = size
        queue.desc_addr, queue.avail_addr, queue.used_addr = TABLE, AVAIL, USED
        queue.event_idx, queue.indirect = negotiated
        queue.activate()
        popped = 0
        while True:
            try:
                chain = queue.pop()
            except QueueError:
                break
            if chain is None:
                break
            popped += 1
            assert popped <= size  # never more than the ring holds
            segments = chain.readable + chain.writable
            assert len(segments) <= max(size, 20)
            assert sum(len(s) for s in segments) <= 2**32 - 1
            for view in segments:
                assert view.obj is mem.regions[0].mapping  # a view of guest RAM, nothing else
            queue.push(chain.head, chain.writable_bytes)
        queue.publish()
        queue.enable_notifications()


# --- the devices, behind their transport -------------------------------------------------------


class FakeVhost:
    """The kernel's side of vhost, checking what it is handed as vhost does: each ring inside
    the memory table it was given, sizes a power of 2 up to 32768. `refuse` makes one of its
    calls fail, as the kernel may."""

    features = (1 << 64) - 1

    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.regions: list[tuple[int, int]] = []
        self.rings: dict[int, tuple[int, ...]] = {}

    def _call(self, name: str) -> None:
        if name == self.refuse:
            raise VhostError(errno.EINVAL, f"fake vhost: {name}: refused")

    def set_features(self, features: int) -> None:
        self._call("set_features")

    def set_mem_table(self, memory: GuestMemory) -> None:
        self._call("set_mem_table")
        self.regions = [(r.host_addr, r.size) for r in memory.regions]

    def set_vring(self, index, size, base, rings, fds) -> None:
        self._call("set_vring")
        assert 0 < size <= 32768 and not size & (size - 1), size
        assert 0 <= base < 1 << 16
        for address, length in zip(rings, (16 * size, 6 + 8 * size, 6 + 2 * size), strict=True):
            inside = any(h <= address and address + length <= h + n for h, n in self.regions)
            assert inside, f"ring at {address:#x} (+{length}) is outside guest RAM"
        self.rings[index] = (size, base, *rings, *fds)

    def net_set_backend(self, index: int, fd: int) -> None:
        self._call("net_set_backend")

    def vsock_set_guest_cid(self, cid: int) -> None:
        self._call("vsock_set_guest_cid")

    def vsock_set_running(self, running: bool) -> None:
        self._call("vsock_set_running")

    def close(self) -> None:
        pass


DEVICES = ["rng", "console", "net", "passt", "vhost-net", "vsock", "block", "block-ro"]


def make_device(kind: str, tmp_path, refuse: str | None = None):
    match kind:
        case "rng":
            return Rng()
        case "console":
            return VirtioConsole(lambda data: None)
        case "net":
            return Net(FakeTun([b"\xff" * 60, b"\xee" * 1500]), b"\x52\x54\x00\x00\x00\x01")
        case "passt":
            return Net(FakePasst([b"\x01" * 60, b"\x02" * 1514]), b"\x52\x54\x00\x00\x00\x02")
        case "vhost-net":
            return VhostNet(FakeTun([]), FakeVhost(refuse), b"\x52\x54\x00\x00\x00\x03")
        case "vsock":
            return Vsock(FakeVhost(refuse), 3)
    disk = tmp_path / f"{kind}.img"
    if not disk.exists():
        disk.write_bytes(b"\xa5" * 65536)
    return Block(disk, readonly=kind == "block-ro")


def host_side(device) -> None:
    """What the device's I/O thread would do besides kicks: host input, arriving frames."""
    if isinstance(device, VirtioConsole):
        device.receive(b"x")
        device._deliver()
    elif isinstance(device, Net) and device.active:
        device._backend_readable()


@contextlib.contextmanager
def device_under_test(kind: str, tmp_path, memory: GuestMemory, refuse: str | None = None):
    """(device, transport, driver) over a fresh guest RAM, the case's budget around them;
    after it, a disk has kept its size (and a read-only one its contents)."""
    device = make_device(kind, tmp_path, refuse)
    disk = getattr(device, "path", None)
    before = disk.read_bytes() if disk else b""
    transport = VirtioMmio(device, fresh(memory), FakeLine())
    driver = Driver(transport, memory)
    driver.alloc.top = RAM + RAM_SIZE
    try:
        with within_budget():
            yield device, transport, driver
    finally:
        transport.close()
    if disk:
        after = disk.read_bytes()
        assert len(after) == len(before)
        if kind == "block-ro":
            assert after == before


REGISTERS = [0x14, 0x20, 0x24, 0x30, 0x38, 0x44, 0x50, 0x64, 0x70, 0x80, 0x84, 0x90, 0x94,
             0xA0, 0xA4, 0xC0, 0x100, 0x104, 0x108]  # fmt: skip
register_offsets = st.sampled_from(REGISTERS) | st.integers(0, 0x1FF)
actions = st.one_of(
    st.tuples(st.just("write"), register_offsets, st.sampled_from([4, 4, 4, 1, 2, 8]),
              st.integers(0, 2**32 - 1) | st.sampled_from([0, 1, 3, 11, 15, 0x80, 16, 0])),
    st.tuples(st.just("read"), register_offsets, st.sampled_from([4, 1, 2, 8]), st.just(0)),
    st.tuples(st.just("kick"), st.integers(0, 4), st.just(4), st.just(0)),
    # the driver's rings are at the top of RAM: most pokes go there
    st.tuples(st.just("poke"), st.integers(RAM + RAM_SIZE - 0x8000, RAM + RAM_SIZE - 8)
              | st.integers(RAM, RAM + RAM_SIZE - 8), st.just(8), st.integers(0, 2**64 - 1)),
)  # fmt: skip
refusals = st.sampled_from([None, None, "set_features", "set_mem_table", "set_vring",
                            "net_set_backend", "vsock_set_running"])  # fmt: skip


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(DEVICES),
    start=st.booleans(),
    refuse=refusals,
    script=st.lists(actions, max_size=60),
)
def test_transport_and_devices_survive_any_guest(guest_ram, kind, start, refuse, script, tmp_path):
    with device_under_test(kind, tmp_path, guest_ram, refuse) as (device, transport, driver):
        if start:  # a proper start first, so that the garbage reaches live queues
            driver.start()
        for action, where, size, value in script:
            if action == "write":
                transport.mmio_write(where, size, value & ((1 << 8 * size) - 1))
            elif action == "read":
                assert 0 <= transport.mmio_read(where, size) < 1 << 8 * size
            elif action == "kick" and where < len(transport.notifiers):
                transport.notified(where)
            elif action == "poke":
                guest_ram.write(where, value.to_bytes(8, "little"))
            host_side(device)
        assert transport.mmio_read(0x70, 4) < 256


# --- well-formed chains that are hostile all the same ------------------------------------------

buffer_lengths = st.one_of(
    st.sampled_from([0, 1, 11, 12, 16, 17, 512, 4096, BUFFER_MAX]), st.integers(0, BUFFER_MAX)
)


@st.composite
def hostile_chains(draw, max_descriptors: int):
    """A chain the queue accepts, made to hurt: its buffers drawn from a few places in RAM
    (so they alias each other), up to 1 MiB each, up to a queue's worth of them, readable
    first, then writable; sometimes through an indirect table. (Not over the rings, at the
    top of RAM: a device writing there breaks the queue, which is the other test's case.)"""
    pool = []
    for _ in range(draw(st.integers(1, 4))):
        length = draw(buffer_lengths)
        start = draw(st.integers(RAM, RAM + RAM_SIZE - RINGS_AREA - length))
        pool.append((start, length))
    count = draw(st.integers(1, 6) | st.just(max_descriptors))
    readable = draw(st.integers(0, count))
    picks = draw(st.lists(st.sampled_from(pool), min_size=count, max_size=count))
    parts = [(a, n, 0 if i < readable else WRITE) for i, (a, n) in enumerate(picks)]
    header = (draw(st.sampled_from([0, 1, 4, 8, 11, 13, 99])), draw(st.integers(0, 200)))
    return parts, header, draw(st.booleans())


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["rng", "console", "net", "passt", "block", "block-ro"]),
    chains=st.lists(st.tuples(st.integers(0, 3), hostile_chains(max_descriptors=64)),
                    min_size=1, max_size=6),
)  # fmt: skip
def test_devices_survive_hostile_well_formed_chains(guest_ram, kind, chains, tmp_path):
    with device_under_test(kind, tmp_path, guest_ram) as (device, transport, driver):
        queues = driver.start()
        for index, (parts, (kind_of_request, sector), indirect) in chains:
            queue = queues[index % len(queues)]
            if len(parts) > queue.size or len(queue.free) < (1 if indirect else len(parts)):
                continue
            address = parts[0][0]  # a block request's header, where the chain starts
            if address + 16 <= RAM + RAM_SIZE:
                guest_ram.write(address, struct.pack("<IIQ", kind_of_request, 0, sector))
            queue.add_buffers(parts, indirect and transport.driver_features & INDIRECT_DESC)
            driver.kick(index % len(queues))
            host_side(device)
            queue.take_used(read=False)
        assert not transport.broken  # well-formed: nothing for the device to refuse


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    readonly=st.booleans(),
    requests=st.lists(
        st.tuples(
            st.sampled_from([0, 1, 4, 8, 11, 13]) | st.integers(0, 2**32 - 1),  # type
            st.integers(0, 200) | st.integers(0, 2**64 - 1),  # sector
            st.lists(st.binary(max_size=1100), max_size=3),  # what the device reads
            st.lists(st.integers(0, 1100), max_size=3),  # what it may write
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_block_answers_every_request_within_its_disk(guest_ram, readonly, requests, tmp_path):
    disk = tmp_path / "fuzz.img"
    disk.write_bytes(b"\x5a" * (128 * 512))
    before = disk.read_bytes()
    mem = fresh(guest_ram)
    transport = VirtioMmio(Block(disk, readonly), mem, FakeLine())
    driver = Driver(transport, mem)
    driver.alloc.top = RAM + RAM_SIZE
    try:
        with within_budget():
            (queue,) = driver.start()
            data_top = driver.alloc.top
            for kind, sector, out, in_lens in requests:
                header = struct.pack("<IIQ", kind, 0, sector)
                driver.alloc.top = data_top  # the data area, used anew by each request
                queue.add([header, *out], [*in_lens, 1])
                driver.kick(0)
                ((_, length, written),) = queue.take_used()
                assert written[-1][0] in (0, 1, 2)  # VIRTIO_BLK_S_OK, IOERR or UNSUPP
                assert length <= sum(in_lens) + 1
        assert len(disk.read_bytes()) == len(before)
        if readonly:
            assert disk.read_bytes() == before
    finally:
        transport.close()
