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


def test_frames_for_a_congested_passt_are_dropped_whole_never_waited_for():
    """passt's socket full: send() returns at once (the I/O thread must not wait while passt
    may be waiting on us), the frame is dropped, and frames that went out are whole."""
    passt = Passt.__new__(Passt)  # its socket only: no process
    passt.sock, peer = socket.socketpair()
    passt.fd, passt._ended, passt._unsent = passt.sock.fileno(), False, b""
    passt.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    frame = [memoryview(b"\xab" * 1500)]
    try:
        results = [passt.send(frame) for _ in range(1000)]  # nobody reads the other end
        assert results[0] and not results[-1]
        sent = results.count(True)
        peer.setblocking(False)
        received = b""
        while True:
            while chunk := _read(peer):
                received += chunk
            if not passt._unsent:
                break
            passt._flush()  # the rest of a frame cut by the full socket
        assert received == (b"\x00\x00\x05\xdc" + b"\xab" * 1500) * sent
    finally:
        passt.sock.close()
        peer.close()


def _read(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""
