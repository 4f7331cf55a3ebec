"""What every virtio device model is to its transport (kvmtool's ops table, as a class).

A device says what it is (ID, queue sizes, features, configuration space) and serves its
queues once the driver has set it up. It never knows its transport's registers, address or
interrupt: it gets an `Activation` that lets it return buffers and raise notifications.

Threads: `queue_notified` and the `watched` callbacks run on the device's I/O thread
(`worker.py`); `activate`, `reset` and `config_*` on the vCPU thread that wrote the register.
The transport's lock is held around every call, so a device needs no locking of its own
unless another thread (the console's input) hands it data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from elvisor.devices.virtio.queue import Chain, SplitQueue
from elvisor.devices.virtio.spec import DeviceId
from elvisor.memory import GuestMemory


@dataclass
class Activation:
    """What a device gets from its transport when the driver sets DRIVER_OK."""

    memory: GuestMemory
    queues: list[SplitQueue]  # those the driver made ready; others have ready == False
    features: int  # negotiated
    notifiers: list[int]  # the eventfd KVM signals when the driver kicks each queue
    _used: Callable[[], None]  # raise the used-buffer notification
    _config_changed: Callable[[], None]
    _kick: Callable[[int], None]  # come back to queue `index` soon (as if the driver kicked)

    def publish(self, queue: SplitQueue) -> None:
        """Show the driver what `queue` returned; interrupt it if it asked for that."""
        if queue.publish():
            self._used()

    def interrupt(self) -> None:
        """Raise the used-buffer notification (for queues served by the kernel, which has
        already decided that the driver wants it)."""
        self._used()

    def config_changed(self) -> None:
        self._config_changed()

    def kick(self, index: int) -> None:
        """Come back to queue `index` soon, on the I/O thread, as if the driver had kicked."""
        self._kick(index)

    def serve(self, index: int, handle: Callable[[Chain], int]) -> None:
        """Serve the chains waiting in queue `index`: `handle` does one and says how many
        bytes it wrote. At most a queue's worth per call, so that a guest that keeps the
        queue full cannot keep the I/O thread from its other work."""
        queue = self.queues[index]
        budget = queue.size
        while True:
            queue.disable_notifications()
            while budget and (chain := queue.pop()):
                queue.push(chain.head, handle(chain))
                budget -= 1
            self.publish(queue)
            if not budget:
                self.kick(index)
                return
            if not queue.enable_notifications():
                return


class VirtioDevice:
    device_id: DeviceId
    queue_sizes: tuple[int, ...]
    features: int = 0  # device-specific feature bits offered (the transport adds its own)
    kernel_queues: tuple[int, ...] = ()  # queues the host kernel serves (vhost), not Python

    def __init__(self) -> None:
        self.active: Activation | None = None
        # set by the I/O thread: watch(fd, False) pauses waiting on one of `watched()`
        self.watch: Callable[[int, bool], None] = lambda fd, on: None

    # --- configuration space (any thread, under the transport's lock) ------------------------

    def config_space(self) -> bytes:
        return b""

    def config_write(self, offset: int, data: bytes) -> None:
        """The driver wrote to the configuration space (most devices ignore it)."""

    # --- life cycle --------------------------------------------------------------------------

    def activate(self, activation: Activation) -> None:
        """DRIVER_OK: start serving."""
        self.active = activation

    def reset(self) -> None:
        """The driver reset the device: forget the queues, drop what is in flight."""
        self.active = None

    def queue_notified(self, index: int) -> None:
        """The driver made buffers available in queue `index` (or something else to do)."""

    def freeze(self) -> None:
        """For a snapshot: no more progress on the host side, and the queues' positions
        whole (the kernel's, for queues it serves). `thaw()` undoes it."""

    def thaw(self) -> None:
        """Go on after `freeze()`."""

    def restored(self) -> None:
        """The device was restored from a snapshot, into a new host (say, tell the driver
        that its host-side connections are gone)."""

    def watched(self) -> list[tuple[int, Callable[[], None]]]:
        """Host file descriptors the I/O thread waits on, each with what to do when readable."""
        return []

    def signalled(self) -> list[tuple[int, Callable[[], None]]]:
        """eventfds the I/O thread waits on and resets, each with what to do when signalled."""
        return []

    def close(self) -> None:
        """Release host resources (files, sockets) when the VM ends."""
