"""vhost (linux/vhost.h): virtqueues served by the host kernel itself.

elvisor keeps the virtio-mmio registers and hands the kernel what it needs to serve a queue:
guest RAM as a table of (guest physical, our virtual) ranges, each ring's addresses in our
address space, the eventfd KVM signals when the guest kicks the queue, and eventfds for the
kernel to signal "interrupt the guest" and "this queue is broken". The kernel translates
every descriptor through the table, so a guest cannot point it outside its RAM.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from enum import IntEnum

from elvisor.errors import UserError
from elvisor.kvm.ioctl import _IO, _IOR, _IOW, _IOWR
from elvisor.log import Log
from elvisor.memory import GuestMemory

log = Log(__name__)

VHOST_VIRTIO = 0xAF
VRING_STATE = struct.Struct("<II")  # struct vhost_vring_state: index, num
VRING_FILE = struct.Struct("<Ii")  # struct vhost_vring_file: index, fd
# struct vhost_vring_addr: index, flags, then desc, used, avail and log addresses
VRING_ADDR = struct.Struct("<IIQQQQ")
MEMORY = struct.Struct("<II")  # struct vhost_memory: nregions, padding; then the regions
MEMORY_REGION = struct.Struct("<QQQQ")  # guest_phys_addr, memory_size, userspace_addr, flags


class VhostIoctl(IntEnum):
    VHOST_GET_FEATURES = _IOR(VHOST_VIRTIO, 0x00, 8)
    VHOST_SET_FEATURES = _IOW(VHOST_VIRTIO, 0x00, 8)
    VHOST_SET_OWNER = _IO(VHOST_VIRTIO, 0x01)
    VHOST_SET_MEM_TABLE = _IOW(VHOST_VIRTIO, 0x03, MEMORY.size)
    VHOST_SET_VRING_NUM = _IOW(VHOST_VIRTIO, 0x10, VRING_STATE.size)
    VHOST_SET_VRING_ADDR = _IOW(VHOST_VIRTIO, 0x11, VRING_ADDR.size)
    VHOST_SET_VRING_BASE = _IOW(VHOST_VIRTIO, 0x12, VRING_STATE.size)
    VHOST_GET_VRING_BASE = _IOWR(VHOST_VIRTIO, 0x12, VRING_STATE.size)
    VHOST_SET_VRING_KICK = _IOW(VHOST_VIRTIO, 0x20, VRING_FILE.size)
    VHOST_SET_VRING_CALL = _IOW(VHOST_VIRTIO, 0x21, VRING_FILE.size)
    VHOST_SET_VRING_ERR = _IOW(VHOST_VIRTIO, 0x22, VRING_FILE.size)
    VHOST_NET_SET_BACKEND = _IOW(VHOST_VIRTIO, 0x30, VRING_FILE.size)
    VHOST_VSOCK_SET_GUEST_CID = _IOW(VHOST_VIRTIO, 0x60, 8)
    VHOST_VSOCK_SET_RUNNING = _IOW(VHOST_VIRTIO, 0x61, 4)


class VhostError(OSError):
    """An ioctl on a vhost device failed (its name is in the message)."""


class Vhost:
    """One open vhost device (/dev/vhost-net, /dev/vhost-vsock), owned by this process."""

    def __init__(self, path: str) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise VhostError(e.errno, f"cannot open {path}: {e.strerror}") from None
        self.path = path
        try:
            self._ioctl(VhostIoctl.VHOST_SET_OWNER, 0)
            answer = self._ioctl(VhostIoctl.VHOST_GET_FEATURES, bytes(8))
            self.features: int = struct.unpack("<Q", answer)[0]
        except BaseException:
            self.close()
            raise

    def _ioctl(self, request: VhostIoctl, arg: int | bytes) -> bytes:
        try:
            return fcntl.ioctl(self.fd, request, arg)  # type: ignore[return-value]
        except OSError as e:
            raise VhostError(e.errno, f"{self.path}: {request.name}: {e.strerror}") from None

    def set_features(self, features: int) -> None:
        """The negotiated features the kernel knows (it refuses any other)."""
        self._ioctl(VhostIoctl.VHOST_SET_FEATURES, struct.pack("<Q", features & self.features))

    def set_mem_table(self, memory: GuestMemory) -> None:
        table = MEMORY.pack(len(memory.regions), 0) + b"".join(
            MEMORY_REGION.pack(r.gpa, r.size, r.host_addr, 0) for r in memory.regions
        )
        self._ioctl(VhostIoctl.VHOST_SET_MEM_TABLE, table)

    def set_vring(
        self, index: int, size: int, base: int, rings: tuple[int, int, int], fds: tuple[int, ...]
    ) -> None:
        """Queue `index`: its size, the next available entry, (descriptor table, used ring,
        available ring) host addresses, and (kick, call, err) eventfds."""
        self._ioctl(VhostIoctl.VHOST_SET_VRING_NUM, VRING_STATE.pack(index, size))
        self._ioctl(VhostIoctl.VHOST_SET_VRING_BASE, VRING_STATE.pack(index, base))
        self._ioctl(VhostIoctl.VHOST_SET_VRING_ADDR, VRING_ADDR.pack(index, 0, *rings, 0))
        kick, call, err = fds
        self._ioctl(VhostIoctl.VHOST_SET_VRING_KICK, VRING_FILE.pack(index, kick))
        self._ioctl(VhostIoctl.VHOST_SET_VRING_CALL, VRING_FILE.pack(index, call))
        self._ioctl(VhostIoctl.VHOST_SET_VRING_ERR, VRING_FILE.pack(index, err))

    def get_vring_base(self, index: int) -> int:
        """The next available entry the kernel would read in queue `index` (and the queue
        stops: set it up again to go on)."""
        answer = self._ioctl(VhostIoctl.VHOST_GET_VRING_BASE, VRING_STATE.pack(index, 0))
        return VRING_STATE.unpack(answer)[1]

    def net_set_backend(self, index: int, fd: int) -> None:
        """vhost-net: queue `index` moves frames to and from the TAP `fd` (-1: stop)."""
        self._ioctl(VhostIoctl.VHOST_NET_SET_BACKEND, VRING_FILE.pack(index, fd))

    def vsock_set_guest_cid(self, cid: int) -> None:
        try:
            self._ioctl(VhostIoctl.VHOST_VSOCK_SET_GUEST_CID, struct.pack("<Q", cid))
        except VhostError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(f"vsock cid={cid} is in use by another VM: pick another") from None
            raise

    def vsock_set_running(self, running: bool) -> None:
        self._ioctl(VhostIoctl.VHOST_VSOCK_SET_RUNNING, struct.pack("<i", int(running)))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_vhost(path: str, *, required: bool) -> Vhost | None:
    """The vhost device at `path`, or None where it cannot be used and is not `required`."""
    try:
        return Vhost(path)
    except VhostError as e:
        if required:
            module = os.path.basename(path).replace("-", "_")
            raise UserError(f"{e.strerror} (is the {module} module loaded?)") from None
        log.info("%s: %s; the Python data plane serves the port", path, e.strerror)
        return None
