"""Property-based tests: hostile guests against the virtqueue, the transport and each device.

What a guest controls is generated at random and with malice (descriptor tables with loops,
chains over the end of RAM, nested indirect tables, registers written in any order with any
width): the VMM must never raise anything but its own QueueError from the queue, never raise
at all from the transport, never touch memory outside the guest, never loop without bound.

`make test` runs a few thousand cases (the "ci" profile); `make fuzz` over 100 000.
"""

from __future__ import annotations

import os
import socket
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from virtio_driver import Driver, FakeLine

from elvisor.devices.tap import Tap
from elvisor.devices.virtio.block import Block
from elvisor.devices.virtio.console import VirtioConsole
from elvisor.devices.virtio.mmio import VirtioMmio
from elvisor.devices.virtio.net import Net
from elvisor.devices.virtio.queue import QueueError, SplitQueue
from elvisor.devices.virtio.rng import Rng
from elvisor.memory import GuestMemory

RAM = 0x4000_0000
RAM_SIZE = 1 << 20
TABLE, AVAIL, USED, DATA = RAM, RAM + 0x4000, RAM + 0x8000, RAM + 0x10000

# addresses a hostile driver would try: inside RAM, at its edges, below it, far beyond it
addresses = st.one_of(
    st.integers(DATA, RAM + RAM_SIZE),
    st.sampled_from([0, RAM - 1, RAM + RAM_SIZE - 1, RAM + RAM_SIZE, 2**64 - 1, 2**63]),
    st.integers(0, 2**64 - 1),
)
lengths = st.one_of(st.integers(0, 4096), st.sampled_from([2**32 - 1, 2**31, RAM_SIZE]))
flags = st.integers(0, 7) | st.integers(0, 0xFFFF)
descriptors = st.tuples(addresses, lengths, flags, st.integers(0, 0xFFFF))


def memory() -> GuestMemory:
    return GuestMemory([(RAM, RAM_SIZE)])


def write_table(mem: GuestMemory, at: int, entries: list[tuple[int, int, int, int]]) -> None:
    for i, entry in enumerate(entries):
        mem.write(at + 16 * i, struct.pack("<QIHH", *entry))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.sampled_from([1, 2, 4, 8, 16]),
    table=st.lists(descriptors, min_size=16, max_size=16),
    indirect_table=st.lists(descriptors, max_size=20),
    heads=st.lists(st.integers(0, 0xFFFF), min_size=16, max_size=16),
    avail_idx=st.integers(0, 0xFFFF),
    negotiated=st.tuples(st.booleans(), st.booleans()),
)
def test_queue_pops_only_sound_chains(size, table, indirect_table, heads, avail_idx, negotiated):
    mem = memory()
    try:
        # odd descriptors with INDIRECT point at the indirect table, as a driver would
        table = [
            (DATA + 0x8000, 16 * len(indirect_table), *rest) if rest[0] & 4 and i % 2 else d
            for i, (d, rest) in enumerate((d, d[2:]) for d in table)
        ]
        write_table(mem, TABLE, table)
        write_table(mem, DATA + 0x8000, indirect_table)
        mem.write(AVAIL, struct.pack("<HH", 0, avail_idx))
        mem.write(AVAIL + 4, struct.pack(f"<{len(heads)}H", *heads))
        queue = SplitQueue(mem, 16)
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
            assert len(segments) <= max(size, 16)
            assert sum(len(s) for s in segments) <= 2**32 - 1
            for view in segments:
                assert view.obj is mem.regions[0].mapping  # a view of guest RAM, nothing else
            queue.push(chain.head, chain.writable_bytes)
        queue.publish()
        queue.enable_notifications()
    finally:
        mem.close()


class FakeTap(Tap):
    """A TAP device that is one end of a packet socket pair (frames keep their bounds)."""

    def __init__(self) -> None:
        ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.fd, self._peer = (end.detach() for end in ends)
        os.set_blocking(self.fd, False)
        os.write(self._peer, bytes(12) + b"\xff" * 60)  # a frame waiting for the guest
        self.name = "fake"

    def set_offload(self, flags: int) -> None:
        pass

    def close(self) -> None:
        super().close()
        os.close(self._peer)


def make_device(kind: str, tmp_path):
    if kind == "rng":
        return Rng()
    if kind == "console":
        return VirtioConsole(lambda data: None)
    if kind == "net":
        return Net(FakeTap(), b"\x52\x54\x00\x00\x00\x01")
    disk = tmp_path / f"{kind}.img"
    if not disk.exists():
        disk.write_bytes(b"\xa5" * 65536)
    return Block(disk, readonly=kind == "block-ro")


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


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["rng", "console", "net", "block", "block-ro"]),
    start=st.booleans(),
    script=st.lists(actions, max_size=60),
)
def test_transport_and_devices_survive_any_guest(kind, start, script, tmp_path):
    mem = memory()
    device = make_device(kind, tmp_path)
    disk = getattr(device, "path", None)
    before = disk.read_bytes() if disk else b""
    transport = VirtioMmio(device, mem, FakeLine())
    driver = Driver(transport, mem)
    driver.alloc.top = RAM + RAM_SIZE
    try:
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
                mem.write(where, value.to_bytes(8, "little"))
            if hasattr(device, "_deliver"):
                device.receive(b"x")
                device._deliver()
            if kind == "net" and device.active:
                device._backend_readable()
        assert transport.mmio_read(0x70, 4) < 256
        if disk:
            after = disk.read_bytes()
            assert len(after) == len(before)
            if kind == "block-ro":
                assert after == before
    finally:
        transport.close()
        mem.close()


block_requests = st.tuples(
    st.sampled_from([0, 1, 4, 8, 11, 13]) | st.integers(0, 2**32 - 1),  # type
    st.integers(0, 200) | st.integers(0, 2**64 - 1),  # sector
    st.lists(st.binary(max_size=1100), max_size=3),  # what the device reads
    st.lists(st.integers(0, 1100), max_size=3),  # what it may write
)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(readonly=st.booleans(), requests=st.lists(block_requests, min_size=1, max_size=8))
def test_block_answers_every_request_within_its_disk(readonly, requests, tmp_path):
    disk = tmp_path / "fuzz.img"
    disk.write_bytes(b"\x5a" * (128 * 512))
    before = disk.read_bytes()
    mem = memory()
    transport = VirtioMmio(Block(disk, readonly), mem, FakeLine())
    driver = Driver(transport, mem)
    driver.alloc.top = RAM + RAM_SIZE
    try:
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
        mem.close()
