"""virtio-net's receive path with passt's frames: none lost when buffers come late."""

import socket
from collections import deque

from virtio_driver import Driver, FakeLine, guest_memory

from elvisor.devices.passt import Passt
from elvisor.devices.virtio.mmio import VirtioMmio
from elvisor.devices.virtio.net import Net


class FakePasst(Passt):
    """Frames already received from passt, waiting for the guest."""

    def __init__(self, frames: list[bytes]) -> None:
        self.sock, self._peer = socket.socketpair()
        self.fd = self.sock.fileno()
        self.frames = deque(frames)
        self._ended = False

    def receive(self) -> bool:
        return True

    def close(self) -> None:
        self.sock.close()
        self._peer.close()


def test_frames_waiting_when_buffers_come_without_a_kick_are_delivered():
    memory = guest_memory()
    device = Net(FakePasst([b"\x01" * 60, b"\x02" * 60]), bytes(6))
    transport = VirtioMmio(device, memory, FakeLine())
    driver = Driver(transport, memory)
    try:
        rx, _ = driver.start()
        rx.add([], [1526])  # room for the first frame only
        queue = transport.queues[0]
        enable = queue.enable_notifications

        def buffer_added_meanwhile() -> bool:  # the driver adds one in the race window
            rx.add([], [1526])
            return enable()

        queue.enable_notifications = buffer_added_meanwhile
        device._backend_readable()
        queue.enable_notifications = enable
        assert [d[0][12:13] for _, _, d in rx.take_used()] == [b"\x01"]
        driver.serve_kicks()  # the device asked to come back: the I/O thread's next turn
        assert [d[0][12:13] for _, _, d in rx.take_used()] == [b"\x02"]
    finally:
        transport.close()
        memory.close()


def test_a_broken_device_stops_watching_its_backend():
    """Frames keep coming, but a device that needs a reset must not spin on them."""
    memory = guest_memory()
    device = Net(FakePasst([b"\x01" * 60]), bytes(6))
    transport = VirtioMmio(device, memory, FakeLine())
    driver = Driver(transport, memory)
    watching: dict[int, bool] = {}
    device.watch = watching.__setitem__
    try:
        rx, _ = driver.start()
        memory.write(rx.avail + 2, (rx.size + 1).to_bytes(2, "little"))  # idx far too far ahead
        transport.readable(device.backend.fd, device._backend_readable)
        assert transport.broken
        transport.readable(device.backend.fd, device._backend_readable)  # readable again
        assert watching == {device.backend.fd: False}
    finally:
        transport.close()
        memory.close()
