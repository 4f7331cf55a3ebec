"""TAP network devices (linux/if_tun.h): a virtual Ethernet port on the host, opened with
the virtio-net header in front of every frame (IFF_VNET_HDR), so that the guest's checksum
and segmentation offloads pass straight through to the host's network stack."""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from elvisor.errors import UserError
from elvisor.kvm.ioctl import _IOR, _IOW

TUNSETIFF = _IOW(ord("T"), 202, 4)
TUNGETFEATURES = _IOR(ord("T"), 207, 4)
TUNSETOFFLOAD = _IOW(ord("T"), 208, 4)
TUNSETVNETHDRSZ = _IOW(ord("T"), 216, 4)
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
IFNAMSIZ = 16
IFREQ = struct.Struct(f"{IFNAMSIZ}sH22x")  # struct ifreq: name, then ifr_flags in the union
VNET_HDR_SIZE = 12  # struct virtio_net_hdr_v1 (virtio 1.x: with num_buffers)


def check_tap_name(name: str) -> None:
    """A network interface's name: 1 to 15 bytes (IFNAMSIZ less the NUL), no '/' or spaces."""
    if not 0 < len(name.encode()) < IFNAMSIZ or "/" in name or len(name.split()) != 1:
        raise UserError(f"tap={name!r}: an interface name of 1 to 15 characters, like tap0")


class Tap:
    """An open TAP device (created if it does not exist yet, which needs CAP_NET_ADMIN)."""

    def __init__(self, name: str) -> None:
        check_tap_name(name)
        try:
            self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise UserError(
                f"cannot open /dev/net/tun: {e.strerror} (is the tun module loaded?)"
            ) from None
        try:
            request = IFREQ.pack(name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
            answer = fcntl.ioctl(self.fd, TUNSETIFF, request)
            self.name = IFREQ.unpack(answer)[0].rstrip(b"\0").decode()
            fcntl.ioctl(self.fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_SIZE))
        except OSError as e:
            os.close(self.fd)
            if e.errno == errno.EPERM:
                raise UserError(
                    f"tap={name}: not allowed to create it: create it for your user first "
                    f"(ip tuntap add {name} mode tap user $USER) or run as root"
                ) from None
            if e.errno == errno.EBUSY:
                raise UserError(f"tap={name}: in use by another program") from None
            raise UserError(f"tap={name}: {e.strerror}") from None

    def read_frame(self, buffers: list[memoryview]) -> int:
        """One frame, its virtio-net header first, into `buffers` (BlockingIOError if none
        waits). As TUN does: 0 without taking a frame when `buffers` hold nothing, EINVAL
        (and the frame dropped) when they cannot hold the header."""
        return os.readv(self.fd, buffers)

    def write_frame(self, buffers: list[memoryview]) -> None:
        """One frame, its virtio-net header first, from `buffers`."""
        os.writev(self.fd, buffers)

    def set_offload(self, flags: int) -> None:
        """TUN_F_* offloads the guest can take: frames we write may be that big and
        unchecksummed. (Frames from the guest may always be.)"""
        fcntl.ioctl(self.fd, TUNSETOFFLOAD, flags)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
