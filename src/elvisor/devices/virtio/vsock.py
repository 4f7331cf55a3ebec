"""virtio-vsock (virtio v1.2, 5.10) with the kernel's vhost-vsock: sockets between host and
guest (AF_VSOCK) with no network in between. The host kernel serves the receive and
transmit queues; the event queue (transport events, sent only on live migration) stays
here, where its buffers simply wait.
"""

from __future__ import annotations

import struct

from elvisor.devices.vhost import Vhost
from elvisor.devices.virtio.spec import DeviceId, bit
from elvisor.devices.virtio.vhost_device import VhostDevice

QUEUE_SIZE = 128
RX, TX, EVENT = 0, 1, 2
VIRTIO_VSOCK_F_SEQPACKET = 1  # 5.10.3 Feature bits


class Vsock(VhostDevice):
    device_id = DeviceId.VSOCK
    queue_sizes = (QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE)
    kernel_queues = (RX, TX)

    def __init__(self, vhost: Vhost, cid: int) -> None:
        super().__init__(vhost)
        self.cid = cid
        self.features = vhost.features & bit(VIRTIO_VSOCK_F_SEQPACKET)
        vhost.vsock_set_guest_cid(cid)

    def config_space(self) -> bytes:
        return struct.pack("<Q", self.cid)  # guest_cid (5.10.4)

    def start(self) -> None:
        self.vhost.vsock_set_running(True)

    def stop(self) -> None:
        self.vhost.vsock_set_running(False)
