"""A virtio device whose queues the host kernel serves (vhost): elvisor keeps the transport
and the configuration space, the kernel moves the data.

At DRIVER_OK the kernel gets the negotiated features, guest RAM and each queue's rings and
eventfds: the kick eventfd is the transport's own (KVM signals it when the guest writes
QueueNotify), so a kick goes from the guest to the kernel without leaving it. The kernel's
"interrupt the guest" eventfd comes back here, to the device's I/O thread, which sets
InterruptStatus and raises the line: the virtio-mmio driver reads InterruptStatus before it
looks at the queues. A queue the kernel finds broken marks the device DEVICE_NEEDS_RESET.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

from elvisor.devices.vhost import Vhost, VhostError
from elvisor.devices.virtio.device import Activation, VirtioDevice
from elvisor.devices.virtio.queue import QueueError
from elvisor.log import Log

log = Log(__name__)


class VhostDevice(VirtioDevice):
    def __init__(self, vhost: Vhost) -> None:
        super().__init__()
        self.vhost = vhost
        self._calls = {index: _eventfd() for index in self.kernel_queues}
        self._errors = {index: _eventfd() for index in self.kernel_queues}

    def signalled(self) -> list[tuple[int, Callable[[], None]]]:
        return [(fd, self._used) for fd in self._calls.values()] + [
            (fd, partial(self._broken, index)) for index, fd in self._errors.items()
        ]

    def activate(self, activation: Activation) -> None:
        super().activate(activation)
        try:
            self.vhost.set_features(activation.features)
            self.vhost.set_mem_table(activation.memory)
            for index in self.kernel_queues:
                queue = activation.queues[index]
                if not queue.ready:
                    raise QueueError(f"queue {index} was not set up before DRIVER_OK")
                fds = (activation.notifiers[index], self._calls[index], self._errors[index])
                self.vhost.set_vring(index, queue.size, queue.next_avail, queue.host_rings(), fds)
            self.start()
        except VhostError as e:
            raise QueueError(f"the kernel refused the queues: {e.strerror}") from None

    def reset(self) -> None:
        if self.active is not None:
            try:
                self.stop()
            except VhostError as e:
                log.warning("virtio %s: %s", self.device_id.name.lower(), e.strerror)
        super().reset()

    def freeze(self) -> None:
        """The kernel stops serving the queues, and its positions go into them."""
        if self.active is None:
            return
        self.stop()
        for index in self.kernel_queues:
            self.active.queues[index].next_avail = self.vhost.get_vring_base(index)

    def thaw(self) -> None:
        """The kernel serves the queues again, from where it was."""
        if self.active is not None:
            self.activate(self.active)

    def start(self) -> None:
        """The queues are set up: let the kernel serve them."""

    def stop(self) -> None:
        """The driver reset the device: the kernel stops serving its queues."""

    def _used(self) -> None:
        if self.active is not None:
            self.active.interrupt()

    def _broken(self, index: int) -> None:
        raise QueueError(f"the kernel found queue {index} broken")

    def close(self) -> None:
        for fd in [*self._calls.values(), *self._errors.values()]:
            os.close(fd)
        self._calls.clear()
        self._errors.clear()
        self.vhost.close()


def _eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
