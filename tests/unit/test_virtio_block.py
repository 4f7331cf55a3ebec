"""virtio-blk over a real file, driven as Linux's virtio_blk driver does."""

import os
import struct

import pytest
from budget import peak_rss_growth
from virtio_driver import CONFIG, NEXT, WRITE, Driver, FakeLine, guest_memory

import elvisor.devices.virtio.block as block_module
from elvisor.devices.virtio.block import Block
from elvisor.devices.virtio.mmio import VirtioMmio
from elvisor.errors import UserError

# 5.2.6 request types and statuses (literal values from the spec)
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES = 0, 1, 4, 8, 11, 13
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
F_RO, F_FLUSH, F_DISCARD, F_WRITE_ZEROES = 1 << 5, 1 << 9, 1 << 13, 1 << 14
SECTORS = 64


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * (SECTORS * 2))
    return path


def start(path, readonly=False, features=None):
    memory = guest_memory()
    transport = VirtioMmio(Block(path, readonly), memory, FakeLine())
    driver = Driver(transport, memory)
    (queue,) = driver.start(features)
    return driver, queue, transport, memory


@pytest.fixture
def blk(disk):
    driver, queue, transport, memory = start(disk)
    yield driver, queue, disk
    transport.close()
    memory.close()


def request(driver, queue, kind, sector=0, out=b"", data_in=0):
    queue.add([struct.pack("<IIQ", kind, 0, sector)] + ([out] if out else []),
              ([data_in] if data_in else []) + [1])  # fmt: skip
    driver.kick(0)
    ((_, length, written),) = queue.take_used()
    return written[-1][0], length, written[0] if data_in else b""


def test_capacity_in_config(blk):
    driver, _, _ = blk
    assert driver.read(CONFIG, 4) | driver.read(CONFIG + 4, 4) << 32 == SECTORS


def test_features(blk, disk):
    driver, _, _ = blk
    features = driver.device_features()
    assert features & F_FLUSH and features & F_DISCARD and features & F_WRITE_ZEROES
    assert not features & F_RO


def test_read(blk, disk):
    driver, queue, _ = blk
    status, length, data = request(driver, queue, T_IN, sector=1, data_in=1024)
    assert status == S_OK and length == 1025
    assert data == disk.read_bytes()[512:1536]


def test_write_and_flush(blk, disk):
    driver, queue, _ = blk
    status, length, _ = request(driver, queue, T_OUT, sector=2, out=b"\xab" * 512)
    assert (status, length) == (S_OK, 1)
    assert disk.read_bytes()[1024:1536] == b"\xab" * 512
    assert request(driver, queue, T_FLUSH)[0] == S_OK


def test_read_into_many_buffers(blk, disk):
    driver, queue, _ = blk
    queue.add([struct.pack("<IIQ", T_IN, 0, 0)], [100, 412, 512, 1], indirect=True)
    driver.kick(0)
    ((_, length, written),) = queue.take_used()
    assert length == 1025 and written[-1] == b"\0"
    assert b"".join(written[:3]) == disk.read_bytes()[:1024]


def test_beyond_the_end_is_an_error(blk, disk):
    driver, queue, _ = blk
    assert request(driver, queue, T_IN, sector=SECTORS - 1, data_in=1024)[0] == S_IOERR
    assert request(driver, queue, T_OUT, sector=SECTORS, out=bytes(512))[0] == S_IOERR
    assert request(driver, queue, T_IN, sector=2**64 - 1, data_in=512)[0] == S_IOERR
    assert os.path.getsize(disk) == SECTORS * 512


def test_partial_sector_is_an_error(blk):
    driver, queue, _ = blk
    assert request(driver, queue, T_IN, data_in=100)[0] == S_IOERR


def test_get_id(blk):
    driver, queue, _ = blk
    status, _length, data = request(driver, queue, T_GET_ID, data_in=20)
    assert status == S_OK and data == b"disk.img".ljust(20, b"\0")


def test_unknown_request_is_unsupported(blk):
    driver, queue, _ = blk
    assert request(driver, queue, 99)[0] == S_UNSUPP


def test_write_zeroes_and_discard(blk, disk):
    driver, queue, _ = blk
    segment = struct.pack("<QII", 4, 2, 0)
    assert request(driver, queue, T_WRITE_ZEROES, out=segment)[0] == S_OK
    assert disk.read_bytes()[2048:3072] == bytes(1024)
    assert request(driver, queue, T_DISCARD, out=struct.pack("<QII", 8, 8, 0))[0] == S_OK
    assert disk.read_bytes()[4096:8192] == bytes(4096)
    assert os.path.getsize(disk) == SECTORS * 512
    bad = struct.pack("<QII", SECTORS - 1, 2, 0)
    assert request(driver, queue, T_WRITE_ZEROES, out=bad)[0] == S_IOERR


def test_readonly_disk_refuses_writes(disk):
    before = disk.read_bytes()
    driver, queue, transport, memory = start(disk, readonly=True)
    try:
        assert driver.device_features() & F_RO
        assert request(driver, queue, T_OUT, out=b"x" * 512)[0] == S_IOERR
        # (not offered on a read-only disk, so not negotiated: unsupported)
        for kind in (T_WRITE_ZEROES, T_DISCARD):
            assert request(driver, queue, kind, out=struct.pack("<QII", 0, 1, 0))[0] == S_UNSUPP
        assert request(driver, queue, T_IN, data_in=512)[0] == S_OK
        assert disk.read_bytes() == before
    finally:
        transport.close()
        memory.close()


def test_request_without_status_byte_is_dropped(blk):
    driver, queue, _ = blk
    queue.add([struct.pack("<IIQ", T_IN, 0, 0)], [])
    driver.kick(0)
    ((_, length, _),) = queue.take_used()
    assert length == 0


def test_short_header_is_an_error(blk):
    driver, queue, _ = blk
    queue.add([b"\0" * 8], [1])
    driver.kick(0)
    ((_, length, written),) = queue.take_used()
    assert length == 0 and written == [b"\0"]


def test_disk_in_use_is_refused(disk):
    first = Block(disk)
    try:
        with pytest.raises(UserError, match="in use"):
            Block(disk)
    finally:
        first.close()
    Block(disk).close()


def test_two_readonly_users_share(disk):
    a, b = Block(disk, readonly=True), Block(disk, readonly=True)
    a.close()
    b.close()


def test_empty_disk_is_refused(tmp_path):
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"x" * 100)
    with pytest.raises(UserError, match="smaller than one"):
        Block(empty)


def test_discard_over_aliased_buffers_costs_the_host_little(blk, disk):
    """A hostile DISCARD: 250 descriptors, each the same 1 MiB of guest RAM (250 MiB of
    "ranges"). Refused before anything is copied: the host's peak memory barely moves."""
    driver, queue, _ = blk
    before = disk.read_bytes()
    header, status, buffer = driver.alloc(16), driver.alloc(1), driver.alloc(1 << 20, 4096)
    driver.memory.write(header, struct.pack("<IIQ", T_DISCARD, 0, 0))
    driver.memory.write(buffer, struct.pack("<QII", 0, 1, 0) * (1 << 16))  # (pages touched)
    parts = [(header, 16, 0)] + [(buffer, 1 << 20, 0)] * 250 + [(status, 1, WRITE)]
    queue.add_buffers(parts)
    _, growth = peak_rss_growth(lambda: driver.kick(0))
    ((_, length, written),) = queue.take_used()
    assert (length, written) == (1, [bytes([S_UNSUPP])])
    assert growth < 4 << 20, f"the host's peak memory grew by {growth >> 20} MiB"
    assert disk.read_bytes() == before


@pytest.mark.parametrize("kind", [T_DISCARD, T_WRITE_ZEROES])
def test_zeroing_requests_need_their_feature(disk, kind):
    """5.2.6.2: a driver that did not accept DISCARD / WRITE_ZEROES gets UNSUPP for them."""
    before = disk.read_bytes()
    features = (1 << 32) | F_FLUSH  # VIRTIO_F_VERSION_1 and FLUSH: no zeroing features
    driver, queue, transport, memory = start(disk, features=features)
    try:
        assert request(driver, queue, kind, out=struct.pack("<QII", 0, 8, 0))[0] == S_UNSUPP
        assert disk.read_bytes() == before
    finally:
        transport.close()
        memory.close()


def test_flush_is_acknowledged_only_after_fdatasync_returned(blk, monkeypatch):
    """The status byte and the used ring say "done" only once fdatasync has returned."""
    driver, queue, _ = blk
    seen = []
    real_fdatasync = os.fdatasync

    def fdatasync(fd):
        seen.append((queue.used_idx(), driver.memory.read(status, 1)))
        real_fdatasync(fd)

    monkeypatch.setattr(block_module.os, "fdatasync", fdatasync)
    header, status = driver.alloc(16), driver.alloc(1)
    driver.memory.write(header, struct.pack("<IIQ", T_FLUSH, 0, 0))
    driver.memory.write(status, b"\xff")
    queue.add_buffers([(header, 16, NEXT), (status, 1, WRITE)])
    used_before = queue.used_idx()
    driver.kick(0)
    assert seen == [(used_before, b"\xff")]  # nothing acknowledged while it ran
    assert queue.used_idx() == (used_before + 1) & 0xFFFF
    assert driver.memory.read(status, 1) == bytes([S_OK])


def test_failed_flush_is_an_io_error(blk, monkeypatch):
    driver, queue, _ = blk

    def fdatasync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(block_module.os, "fdatasync", fdatasync)
    assert request(driver, queue, T_FLUSH)[0] == S_IOERR
