"""virtio-net on a TAP device with the kernel's vhost-net data plane: frames move between
the TAP and guest memory inside the host kernel, never through Python (`net.py` is the
Python data plane, for hosts without /dev/vhost-net and for passt).

The TAP keeps its virtio-net header, so the guest's offloads pass through as with the Python
plane; vhost also takes mergeable receive buffers, so the guest posts page-sized buffers
instead of 64 KiB ones for big TCP segments.
"""

from __future__ import annotations

from elvisor.devices.tap import Tap
from elvisor.devices.vhost import Vhost
from elvisor.devices.virtio.net import (
    BASIC_FEATURES,
    QUEUE_SIZE,
    RECEIVEQ,
    TAP_OFFLOADS,
    TRANSMITQ,
    Feature,
    config_space,
    tap_offloads,
)
from elvisor.devices.virtio.spec import DeviceId, bit
from elvisor.devices.virtio.vhost_device import VhostDevice


class VhostNet(VhostDevice):
    device_id = DeviceId.NET
    queue_sizes = (QUEUE_SIZE, QUEUE_SIZE)
    kernel_queues = (RECEIVEQ, TRANSMITQ)

    def __init__(self, tap: Tap, vhost: Vhost, mac: bytes) -> None:
        super().__init__(vhost)
        self.tap = tap
        self.mac = mac
        self.features = (
            BASIC_FEATURES | sum(bit(f) for f in TAP_OFFLOADS) | bit(Feature.VIRTIO_NET_F_MRG_RXBUF)
        )

    def config_space(self) -> bytes:
        return config_space(self.mac)

    def start(self) -> None:
        assert self.active is not None
        self.tap.set_offload(tap_offloads(self.active.features))
        for index in self.kernel_queues:
            self.vhost.net_set_backend(index, self.tap.fd)

    def stop(self) -> None:
        for index in self.kernel_queues:
            self.vhost.net_set_backend(index, -1)

    def close(self) -> None:
        super().close()
        self.tap.close()
