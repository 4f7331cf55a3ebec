"""A virtio device's I/O thread: it waits on the queues' eventfds (signalled by KVM when the
guest kicks a queue), the interrupt's resample eventfd, the device's own eventfds (from the
kernel, for queues vhost serves: those queues' kicks go to the kernel, not here) and its
host file descriptors, and does the device's work, so that no vCPU thread waits on a disk
or a network.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
from collections.abc import Callable
from functools import partial

from elvisor.devices.virtio.mmio import VirtioMmio


class Worker:
    def __init__(self, transport: VirtioMmio, resample_fd: int | None = None) -> None:
        self.transport = transport
        self._stop = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stop, selectors.EVENT_READ, None)
        device = transport.device
        for index, fd in enumerate(transport.notifiers):
            if index not in device.kernel_queues:  # (the kernel waits on those itself)
                kicked = partial(transport.notified, index)
                self._selector.register(fd, selectors.EVENT_READ, self._drained(fd, kicked))
        if resample_fd is not None:
            resampled = self._drained(resample_fd, transport.interrupt.resampled)
            self._selector.register(resample_fd, selectors.EVENT_READ, resampled)
        for fd, callback in device.signalled():
            signalled = partial(transport.signalled, callback)
            self._selector.register(fd, selectors.EVENT_READ, self._drained(fd, signalled))
        self._watched = {
            fd: partial(transport.readable, fd, callback) for fd, callback in device.watched()
        }
        for fd, callback in self._watched.items():
            self._selector.register(fd, selectors.EVENT_READ, callback)
        device.watch = self.watch
        name = f"virtio-{device.device_id.name.lower()}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @staticmethod
    def _drained(fd: int, action: Callable[[], None]) -> Callable[[], None]:
        """Reset the eventfd `fd`, then do `action`."""

        def drain_and_act() -> None:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(fd)
            action()

        return drain_and_act

    def watch(self, fd: int, on: bool) -> None:
        """Wait on one of the device's fds, or stop for a while (say while the guest has no
        buffers for what it brings). Called on this thread, from the device's callbacks."""
        if on and fd not in self._selector.get_map():
            self._selector.register(fd, selectors.EVENT_READ, self._watched[fd])
        elif not on and fd in self._selector.get_map():
            self._selector.unregister(fd)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    return
                key.data()

    def stop(self) -> None:
        """Stop the thread (after the work in hand) and release the selector."""
        os.eventfd_write(self._stop, 1)
        if self._thread.is_alive():
            self._thread.join()
        self._selector.close()
        os.close(self._stop)
