"""virtio-blk (virtio v1.2, 5.2): a raw image file as the guest's disk.

Data moves between the file and guest RAM with preadv/pwritev on views of guest memory, with
no copies. A FLUSH is an fdatasync of the file: what the guest was told is flushed is on
the disk. A read-only disk refuses writes with VIRTIO_BLK_S_IOERR. The file is locked (shared
when read-only, exclusive otherwise) so that two VMs cannot write one image.

What a request costs the host is bounded whatever the guest puts in it: data moves through
views of guest memory, and the only bytes copied are the 16-byte header and, for DISCARD and
WRITE_ZEROES, at most MAX_ZEROES_SEGMENTS ranges of 16 bytes (256 bytes), after their size
was checked: at most 272 bytes, plus one view object per descriptor (QUEUE_SIZE at most).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path

from elvisor.devices.virtio.device import VirtioDevice
from elvisor.devices.virtio.guestlog import GuestLog
from elvisor.devices.virtio.queue import Chain, split
from elvisor.devices.virtio.spec import DeviceId, bit
from elvisor.errors import UserError
from elvisor.log import Log

log = Log(__name__)

SECTOR = 512
QUEUE_SIZE = 256
SEG_MAX = QUEUE_SIZE - 2  # data buffers in a request, besides the header and the status
MAX_ZEROES_SECTORS = 1 << 16  # per DISCARD or WRITE_ZEROES segment (32 MiB)
MAX_ZEROES_SEGMENTS = 16
VIRTIO_BLK_ID_BYTES = 20
ZERO_CHUNK = bytes(1 << 20)


class Feature(IntEnum):
    """5.2.3 Feature bits."""

    VIRTIO_BLK_F_SEG_MAX = 2
    VIRTIO_BLK_F_RO = 5
    VIRTIO_BLK_F_BLK_SIZE = 6
    VIRTIO_BLK_F_FLUSH = 9
    VIRTIO_BLK_F_DISCARD = 13
    VIRTIO_BLK_F_WRITE_ZEROES = 14


class RequestType(IntEnum):
    """5.2.6 Device Operation: request types."""

    VIRTIO_BLK_T_IN = 0
    VIRTIO_BLK_T_OUT = 1
    VIRTIO_BLK_T_FLUSH = 4
    VIRTIO_BLK_T_GET_ID = 8
    VIRTIO_BLK_T_DISCARD = 11
    VIRTIO_BLK_T_WRITE_ZEROES = 13


ZEROES_FEATURE = {
    RequestType.VIRTIO_BLK_T_DISCARD: Feature.VIRTIO_BLK_F_DISCARD,
    RequestType.VIRTIO_BLK_T_WRITE_ZEROES: Feature.VIRTIO_BLK_F_WRITE_ZEROES,
}
VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2
VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1

REQUEST_HEADER = struct.Struct("<IIQ")  # type, reserved, sector
ZEROES_SEGMENT = struct.Struct("<QII")  # sector, num_sectors, flags
# 5.2.4 configuration layout, up to write_zeroes_may_unmap (and its padding)
CONFIG = struct.Struct("<QII HBB I BBHI BBH IIIII B3x")

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


Transfer = Callable[[int, list[memoryview], int], int]  # os.preadv or os.pwritev


class _RequestError(Exception):
    """The request cannot be done: answered with this status."""

    def __init__(self, status: int, why: str = "") -> None:
        super().__init__(why)
        self.status = status


class Block(VirtioDevice):
    device_id = DeviceId.BLOCK
    queue_sizes = (QUEUE_SIZE,)

    def __init__(self, path: Path, readonly: bool = False) -> None:
        super().__init__()
        self.path = path
        self.readonly = readonly
        flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC
        try:
            self.fd = os.open(path, flags)
        except OSError as e:
            raise UserError(f"cannot open disk {path}: {e.strerror}") from None
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_SH if readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            self.sectors = os.lseek(self.fd, 0, os.SEEK_END) // SECTOR
        except BlockingIOError:
            os.close(self.fd)
            raise UserError(
                f"disk {path} is in use by another program (another VM?): stop it, "
                "or give a copy of the image"
            ) from None
        if self.sectors == 0:
            os.close(self.fd)
            raise UserError(f"disk {path} is smaller than one {SECTOR}-byte sector")
        self.serial = path.name.encode()[:VIRTIO_BLK_ID_BYTES]
        self.features = sum(
            bit(f)
            for f in (
                Feature.VIRTIO_BLK_F_SEG_MAX,
                Feature.VIRTIO_BLK_F_BLK_SIZE,
                Feature.VIRTIO_BLK_F_FLUSH,
            )
        )
        if readonly:
            self.features |= bit(Feature.VIRTIO_BLK_F_RO)
        else:
            self.features |= bit(Feature.VIRTIO_BLK_F_DISCARD)
            self.features |= bit(Feature.VIRTIO_BLK_F_WRITE_ZEROES)
        self._config = CONFIG.pack(
            self.sectors,  # capacity
            0,  # size_max (not offered)
            SEG_MAX,
            0, 0, 0,  # geometry (not offered)
            SECTOR,  # blk_size
            0, 0, 0, 0,  # topology (not offered)
            0, 0,  # writeback, unused0
            1,  # num_queues
            MAX_ZEROES_SECTORS, MAX_ZEROES_SEGMENTS, 1,  # discard: sectors, segments, alignment
            MAX_ZEROES_SECTORS, MAX_ZEROES_SEGMENTS,  # write zeroes: sectors, segments
            1,  # write_zeroes_may_unmap
        )  # fmt: skip
        self._guest_log = GuestLog(log, f"virtio-blk {self.path.name}")

    def config_space(self) -> bytes:
        return self._config

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # (the lock goes with it)
            self.fd = -1

    def queue_notified(self, index: int) -> None:
        assert self.active is not None
        self.active.serve(index, self.request)

    # --- one request (5.2.6) -------------------------------------------------------------------

    def request(self, chain: Chain) -> int:
        """Do the request in `chain`; the bytes written into it (data and the status byte)."""
        writable = chain.writable_bytes
        if writable < 1 or chain.readable_bytes < REQUEST_HEADER.size:
            self._guest_error(f"request {chain.head} has no header or no status byte: dropped")
            return 0
        data_in, (status_view,) = split(chain.writable, writable - 1)
        header, data_out = split(chain.readable, REQUEST_HEADER.size)
        kind, _, sector = REQUEST_HEADER.unpack(b"".join(bytes(v) for v in header))
        written = 0
        try:
            written = self._do(kind, sector, data_out, data_in)
            status = VIRTIO_BLK_S_OK
        except _RequestError as e:
            status = e.status
            if str(e):
                self._guest_error(f"request {chain.head}: {e}")
        except OSError as e:
            status = VIRTIO_BLK_S_IOERR
            self._guest_error(f"{self.path}: {e.strerror}")
        status_view[0] = status
        return written + 1

    def _do(
        self, kind: int, sector: int, data_out: list[memoryview], data_in: list[memoryview]
    ) -> int:
        match kind:
            case RequestType.VIRTIO_BLK_T_IN:
                offset = self._span(sector, data_in)
                return self._transfer(os.preadv, data_in, offset)
            case RequestType.VIRTIO_BLK_T_OUT:
                self._writable()
                offset = self._span(sector, data_out)
                self._transfer(os.pwritev, data_out, offset)
                return 0
            case RequestType.VIRTIO_BLK_T_FLUSH:
                if not self.readonly:
                    os.fdatasync(self.fd)
                return 0
            case RequestType.VIRTIO_BLK_T_GET_ID:
                serial = self.serial.ljust(VIRTIO_BLK_ID_BYTES, b"\0")
                done = 0
                for view in data_in:
                    n = min(len(view), len(serial) - done)
                    view[:n] = serial[done : done + n]
                    done += n
                return done
            case RequestType.VIRTIO_BLK_T_DISCARD | RequestType.VIRTIO_BLK_T_WRITE_ZEROES:
                self._negotiated(ZEROES_FEATURE[RequestType(kind)])
                self._writable()
                self._zeroes(kind, self._ranges(data_out))
                return 0
        raise _RequestError(VIRTIO_BLK_S_UNSUPP)

    def _negotiated(self, feature: Feature) -> None:
        """5.2.6.2: a request of a feature the driver did not accept is not served."""
        assert self.active is not None
        if not self.active.features & bit(feature):
            raise _RequestError(VIRTIO_BLK_S_UNSUPP, f"{feature.name} was not negotiated")

    @staticmethod
    def _ranges(data_out: list[memoryview]) -> bytes:
        """The ranges of a DISCARD or WRITE_ZEROES request, copied only once their size is
        known to be sound (whole ranges, at most MAX_ZEROES_SEGMENTS of them)."""
        size = sum(len(v) for v in data_out)
        count, rest = divmod(size, ZEROES_SEGMENT.size)
        if not 0 < count <= MAX_ZEROES_SEGMENTS or rest:
            raise _RequestError(VIRTIO_BLK_S_UNSUPP, f"{size} bytes of ranges")
        return b"".join(bytes(v) for v in data_out)

    def _writable(self) -> None:
        if self.readonly:
            raise _RequestError(VIRTIO_BLK_S_IOERR)  # no message: the guest was told (F_RO)

    def _span(self, sector: int, views: list[memoryview]) -> int:
        """The file offset of a transfer, after checking it lies inside the disk."""
        length = sum(len(v) for v in views)
        if length % SECTOR:
            raise _RequestError(VIRTIO_BLK_S_IOERR, f"{length} bytes: not whole sectors")
        if sector + length // SECTOR > self.sectors:
            raise _RequestError(VIRTIO_BLK_S_IOERR, f"sector {sector} is beyond the disk")
        return sector * SECTOR

    def _transfer(self, op: Transfer, views: list[memoryview], offset: int) -> int:
        """preadv or pwritev all of `views` at `offset` (a short transfer is carried on)."""
        done = 0
        while views:
            n = op(self.fd, views, offset + done)
            if n == 0:  # the file shrank under us
                raise OSError(errno.EIO, "unexpected end of the disk image")
            done += n
            views = split(views, n)[1]
        return done

    def _zeroes(self, kind: int, ranges: bytes) -> None:
        for sector, sectors, flags in ZEROES_SEGMENT.iter_unpack(ranges):
            if sectors > MAX_ZEROES_SECTORS or flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP:
                raise _RequestError(VIRTIO_BLK_S_UNSUPP, f"range of {sectors} sectors")
            if sector + sectors > self.sectors:
                raise _RequestError(VIRTIO_BLK_S_IOERR, f"sector {sector} is beyond the disk")
            offset, length = sector * SECTOR, sectors * SECTOR
            if kind == RequestType.VIRTIO_BLK_T_DISCARD:
                self._discard(offset, length)
            else:
                self._write_zeroes(offset, length, bool(flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP))

    def _discard(self, offset: int, length: int) -> None:
        try:
            fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise  # (where holes cannot be punched, a discard is only advice)

    def _write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE if unmap else FALLOC_FL_ZERO_RANGE
        try:
            fallocate(self.fd, mode, offset, length)
            return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise
        end = offset + length
        while offset < end:
            offset += os.pwrite(self.fd, memoryview(ZERO_CHUNK)[: end - offset], offset)

    def _guest_error(self, what: str) -> None:
        self._guest_log.warning(what)
