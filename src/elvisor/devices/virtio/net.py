"""virtio-net (virtio v1.2, 5.1): an Ethernet port, on a TAP device or on passt.

This is the Python data plane (`vhost_net.py` is the kernel's). On a TAP device, frames
carry the virtio-net header both ways, so the guest's checksum and TSO offloads go through
untouched and a frame moves between the TAP and guest memory with one readv or writev,
without copies. passt's frames carry no
header: the device adds an empty one (no offloads offered). Receiving waits (its fd is not
watched) while the guest has no buffers, so a guest that stops reading costs nothing.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum

from elvisor.devices.passt import Passt
from elvisor.devices.tap import (
    TUN_F_CSUM,
    TUN_F_TSO4,
    TUN_F_TSO6,
    TUN_F_TSO_ECN,
    VNET_HDR_SIZE,
    Tap,
)
from elvisor.devices.virtio.device import Activation, VirtioDevice
from elvisor.devices.virtio.guestlog import GuestLog
from elvisor.devices.virtio.queue import Chain, split
from elvisor.devices.virtio.spec import DeviceId, bit
from elvisor.log import Log

log = Log(__name__)

QUEUE_SIZE = 256
RECEIVEQ, TRANSMITQ = 0, 1


class Feature(IntEnum):
    """5.1.3 Feature bits."""

    VIRTIO_NET_F_CSUM = 0
    VIRTIO_NET_F_GUEST_CSUM = 1
    VIRTIO_NET_F_MTU = 3
    VIRTIO_NET_F_MAC = 5
    VIRTIO_NET_F_GUEST_TSO4 = 7
    VIRTIO_NET_F_GUEST_TSO6 = 8
    VIRTIO_NET_F_GUEST_ECN = 9
    VIRTIO_NET_F_HOST_TSO4 = 11
    VIRTIO_NET_F_HOST_TSO6 = 12
    VIRTIO_NET_F_HOST_ECN = 13
    VIRTIO_NET_F_MRG_RXBUF = 15
    VIRTIO_NET_F_STATUS = 16


VIRTIO_NET_S_LINK_UP = 1
MTU = 1500  # what the guest's buffers are sized for (bigger frames go by TSO, on a TAP)
NUM_BUFFERS_OFFSET = 10  # in struct virtio_net_hdr_v1
# what the guest may send (the TAP takes it as it is) and receive (the TAP is told, below)
TAP_OFFLOADS = [
    Feature.VIRTIO_NET_F_CSUM, Feature.VIRTIO_NET_F_HOST_TSO4, Feature.VIRTIO_NET_F_HOST_TSO6,
    Feature.VIRTIO_NET_F_HOST_ECN, Feature.VIRTIO_NET_F_GUEST_CSUM,
    Feature.VIRTIO_NET_F_GUEST_TSO4, Feature.VIRTIO_NET_F_GUEST_TSO6,
    Feature.VIRTIO_NET_F_GUEST_ECN,
]  # fmt: skip
TUN_OFFLOADS = {
    Feature.VIRTIO_NET_F_GUEST_CSUM: TUN_F_CSUM,
    Feature.VIRTIO_NET_F_GUEST_TSO4: TUN_F_TSO4,
    Feature.VIRTIO_NET_F_GUEST_TSO6: TUN_F_TSO6,
    Feature.VIRTIO_NET_F_GUEST_ECN: TUN_F_TSO_ECN,
}
EMPTY_HEADER = struct.pack("<BBHHHHH", 0, 0, 0, 0, 0, 0, 1)  # num_buffers = 1


BASIC_FEATURES = (
    bit(Feature.VIRTIO_NET_F_MAC) | bit(Feature.VIRTIO_NET_F_STATUS) | bit(Feature.VIRTIO_NET_F_MTU)
)


def config_space(mac: bytes) -> bytes:
    """5.1.4 Device configuration layout: mac, status, max_virtqueue_pairs, mtu."""
    return mac + struct.pack("<HHH", VIRTIO_NET_S_LINK_UP, 1, MTU)


def tap_offloads(features: int) -> int:
    """The TUN_F_* flags for the guest's negotiated receive offloads."""
    flags = 0
    for feature, flag in TUN_OFFLOADS.items():
        if features & bit(feature):
            flags |= flag
    if not flags & TUN_F_CSUM:  # TSO without checksum offload is not a thing
        flags = 0
    return flags


class Net(VirtioDevice):
    device_id = DeviceId.NET
    queue_sizes = (QUEUE_SIZE, QUEUE_SIZE)

    def __init__(self, backend: Tap | Passt, mac: bytes) -> None:
        super().__init__()
        self.backend = backend
        self.mac = mac
        self.features = BASIC_FEATURES
        if isinstance(backend, Tap):
            self.features |= sum(bit(f) for f in TAP_OFFLOADS)
        self._guest_log = GuestLog(log, "virtio-net", limit=8)

    def config_space(self) -> bytes:
        return config_space(self.mac)

    def watched(self) -> list[tuple[int, Callable[[], None]]]:
        return [(self.backend.fd, self._backend_readable)]

    def activate(self, activation: Activation) -> None:
        super().activate(activation)
        if isinstance(self.backend, Tap):
            self.backend.set_offload(tap_offloads(activation.features))

    def close(self) -> None:
        self.backend.close()

    def queue_notified(self, index: int) -> None:
        assert self.active is not None
        if index == TRANSMITQ:
            self.active.serve(TRANSMITQ, self._transmit)
        else:
            self.watch(self.backend.fd, True)  # buffers: the backend may bring frames again
            self._backend_readable()

    # --- guest -> host -----------------------------------------------------------------------

    def _transmit(self, chain: Chain) -> int:
        if chain.readable_bytes <= VNET_HDR_SIZE:
            return 0
        if isinstance(self.backend, Passt):  # (dropped when passt is congested, like a link)
            self.backend.send(split(chain.readable, VNET_HDR_SIZE)[1])
            return 0
        try:
            self.backend.write_frame(chain.readable)
        except BlockingIOError:  # the host's side is congested: the frame is lost
            pass
        except OSError as e:  # down
            self._drop(f"a frame to the host lost: {e.strerror}")
        return 0

    # --- host -> guest -----------------------------------------------------------------------

    def _backend_readable(self) -> None:
        if self.active is None or not self.active.queues[RECEIVEQ].ready:
            self.watch(self.backend.fd, False)  # until the driver is there (its RX kick)
            return
        queue = self.active.queues[RECEIVEQ]
        if isinstance(self.backend, Tap):
            waiting = self._receive_from_tap()
        else:
            waiting = self._receive_from_passt()
        self.active.publish(queue)
        if not waiting:
            return
        if queue.enable_notifications():  # buffers came meanwhile (and no kick will say so)
            self.active.kick(RECEIVEQ)
        else:
            self.watch(self.backend.fd, False)  # frames wait for buffers: the RX kick

    def _receive_from_tap(self) -> bool:
        """Frames from the TAP straight into the guest's buffers; True if some must wait.

        A buffer too small for the virtio-net header is the guest's mistake: it goes back
        empty, and the frame waits for the next one (TUN would return 0 for an empty buffer,
        keeping the frame, and fail with EINVAL for a short one)."""
        assert self.active is not None and isinstance(self.backend, Tap)
        queue = self.active.queues[RECEIVEQ]
        for _ in range(queue.size):
            chain = queue.pop()
            if chain is None:
                return True
            if chain.writable_bytes < VNET_HDR_SIZE:
                self._drop(f"receive buffer {chain.head} has no room for the frame's header")
                queue.push(chain.head, 0)
                continue
            try:
                n = self.backend.read_frame(chain.writable)
            except BlockingIOError:
                queue.undo_pop()
                return False
            except OSError as e:  # the TAP is down or gone: nothing to wait for
                queue.undo_pop()
                self._drop(f"the TAP cannot be read: {e.strerror}")
                self.watch(self.backend.fd, False)
                return False
            if n < VNET_HDR_SIZE:  # (TUN never returns less than a header)
                self._drop(f"a frame of {n} bytes from the TAP")
                n = 0
            else:
                _, rest = split(chain.writable, NUM_BUFFERS_OFFSET)
                Chain(chain.head, writable=rest).write(b"\x01\x00")
            queue.push(chain.head, n)
        return False

    def _receive_from_passt(self) -> bool:
        assert self.active is not None and isinstance(self.backend, Passt)
        queue = self.active.queues[RECEIVEQ]
        if not self.backend.receive():
            self.watch(self.backend.fd, False)  # passt has gone: nothing more will come
        frames = self.backend.frames
        while frames:
            chain = queue.pop()
            if chain is None:
                return True
            frame = frames.popleft()
            if chain.writable_bytes < VNET_HDR_SIZE + len(frame):
                self._drop(f"a frame of {len(frame)} bytes is bigger than the guest's buffer")
                queue.push(chain.head, 0)
                continue
            queue.push(chain.head, chain.write(EMPTY_HEADER + frame))
        return False

    def _drop(self, why: str) -> None:
        self._guest_log.warning(why)
