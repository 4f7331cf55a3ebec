"""virtio-blk over a real file, driven as Linux's virtio_blk driver does."""

import os
import struct

import pytest
from virtio_driver import CONFIG, Driver, FakeLine, guest_memory

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


def start(path, readonly=False):
    memory = guest_memory()
    transport = VirtioMmio(Block(path, readonly), memory, FakeLine())
    driver = Driver(transport, memory)
    (queue,) = driver.start()
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
        assert (
            request(driver, queue, T_WRITE_ZEROES, out=struct.pack("<QII", 0, 1, 0))[0] == S_IOERR
        )
        assert request(driver, queue, T_DISCARD, out=struct.pack("<QII", 0, 1, 0))[0] == S_IOERR
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
