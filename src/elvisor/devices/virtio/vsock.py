"""virtio-vsock (virtio v1.2, 5.10) with the kernel's vhost-vsock: sockets between host and
guest (AF_VSOCK) with no network in between. The host kernel serves the receive and
transmit queues; the event queue (transport events, sent only on live migration) stays
here, where its buffers simply wait.
"""

from __future__ import annotations

import struct

from elvisor.devices.vhost import Vhost
from elvisor.devices.virtio.queue import split
from elvisor.devices.virtio.spec import DeviceId, bit
from elvisor.devices.virtio.vhost_device import VhostDevice

QUEUE_SIZE = 128
RX, TX, EVENT = 0, 1, 2
VIRTIO_VSOCK_F_SEQPACKET = 1  # 5.10.3 Feature bits
VIRTIO_VSOCK_EVENT_TRANSPORT_RESET = 0  # 5.10.6.6


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

    def restored(self) -> None:
        """5.10.6.6: after a migration the device tells the driver, on the event queue,
        that the transport was reset: its connections are gone, its listeners stay."""
        if self.active is None or not self.active.queues[EVENT].ready:
            return
        queue = self.active.queues[EVENT]
        chain = queue.pop()
        if chain is None or chain.writable_bytes < 4:
            return  # (no buffer for the event: the driver finds out at its next send)
        event, done = struct.pack("<I", VIRTIO_VSOCK_EVENT_TRANSPORT_RESET), 0
        for view in split(chain.writable, len(event))[0]:
            view[:] = event[done : done + len(view)]
            done += len(view)
        queue.push(chain.head, len(event))
        self.active.publish(queue)

    def start(self) -> None:
        self.vhost.vsock_set_running(True)

    def stop(self) -> None:
        self.vhost.vsock_set_running(False)
