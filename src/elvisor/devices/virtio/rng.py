"""virtio-rng, the entropy device (virtio v1.2, 5.4): the guest's buffers filled from the
host's random number generator. One queue, no configuration, no features."""

from __future__ import annotations

import os

from elvisor.devices.virtio.device import VirtioDevice
from elvisor.devices.virtio.queue import Chain
from elvisor.devices.virtio.spec import DeviceId

QUEUE_SIZE = 64
MAX_PER_REQUEST = 64 * 1024  # a guest asking for gigabytes gets this much per buffer


class Rng(VirtioDevice):
    device_id = DeviceId.ENTROPY
    queue_sizes = (QUEUE_SIZE,)

    def queue_notified(self, index: int) -> None:
        assert self.active is not None
        self.active.serve(index, self._fill)

    @staticmethod
    def _fill(chain: Chain) -> int:
        wanted = min(chain.writable_bytes, MAX_PER_REQUEST)
        return chain.write(os.getrandom(wanted)) if wanted else 0
