"""virtio-net's receive path: with passt's frames, none lost when buffers come late; with a
TAP, hostile receive buffers cost a warning, never a spinning I/O thread."""

import contextlib
import errno
import os
import select
import socket
from collections import deque

import pytest
from virtio_driver import WRITE, Driver, FakeLine, guest_memory

from elvisor.devices.passt import Passt
from elvisor.devices.tap import Tap
from elvisor.devices.virtio.mmio import VirtioMmio
from elvisor.devices.virtio.net import Net


class FakePasst(Passt):
    """Frames already received from passt, waiting for the guest."""

    def __init__(self, frames: list[bytes]) -> None:
        self.sock, self._peer = socket.socketpair()
        self.fd = self.sock.fileno()
        self.frames = deque(frames)
        self._ended = False
        self._unsent = b""

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


@contextlib.contextmanager
def net_device(backend):
    """(device, transport, driver, {fd: watched}) for a port on `backend`."""
    memory = guest_memory()
    device = Net(backend, bytes(6))
    transport = VirtioMmio(device, memory, FakeLine())
    watching: dict[int, bool] = {}
    device.watch = watching.__setitem__
    try:
        yield device, transport, Driver(transport, memory), watching
    finally:
        transport.close()
        memory.close()


def test_a_broken_device_stops_watching_its_backend():
    """Frames keep coming, but a device that needs a reset must not spin on them."""
    with net_device(FakePasst([b"\x01" * 60])) as (device, transport, driver, watching):
        rx, _ = driver.start()
        driver.memory.write(rx.avail + 2, (rx.size + 1).to_bytes(2, "little"))  # too far ahead
        transport.readable(device.backend.fd, device._backend_readable)
        assert transport.broken
        transport.readable(device.backend.fd, device._backend_readable)  # readable again
        assert watching == {device.backend.fd: False}


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


class FakeTun(Tap):
    """A TAP device whose reads behave as TUN's do (drivers/net/tun.c, with IFF_VNET_HDR):
    buffers of no bytes read 0 and leave the frame queued; buffers shorter than the 12-byte
    header fail with EINVAL and the frame is dropped. Frames wait in a packet socket pair, so
    the fd is readable exactly while one waits."""

    def __init__(self, frames: list[bytes]) -> None:
        ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.fd, self._peer = (end.detach() for end in ends)
        os.set_blocking(self.fd, False)
        os.set_blocking(self._peer, False)  # (frames the guest sends, nobody reads: dropped)
        for frame in frames:
            os.write(self._peer, bytes(12) + frame)
        self.name = "fake"

    def read_frame(self, buffers):
        room = sum(len(b) for b in buffers)
        if room == 0:
            return 0
        if room < 12:
            os.read(self.fd, 65536)  # (raises BlockingIOError when nothing waits)
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return os.readv(self.fd, buffers)

    def write_frame(self, buffers):
        os.writev(self._peer, buffers)

    def set_offload(self, flags):
        pass

    def close(self):
        super().close()
        os.close(self._peer)

    def frames_waiting(self) -> bool:
        return bool(select.select([self.fd], [], [], 0)[0])


@pytest.mark.parametrize("room", [0, 1, 11])
def test_receive_buffers_without_room_for_the_header_go_back_empty(room):
    """The guest offers buffers too small for the header: each goes back used and empty,
    the frame waits for a real buffer, and the I/O thread is not left watching a readable fd
    it cannot empty (which would wake it again at once, forever)."""
    tap = FakeTun([b"\x01" * 60])
    with net_device(tap) as (device, transport, driver, watching):
        rx, _ = driver.start()
        for _ in range(3):
            rx.add_buffers([(driver.alloc(16), room, WRITE)])
        transport.readable(tap.fd, device._backend_readable)
        assert not transport.broken
        assert [length for _, length, _ in rx.take_used()] == [0, 0, 0]
        assert tap.frames_waiting() and watching[tap.fd] is False
        rx.add([], [1526])  # a real buffer, and its kick
        driver.kick(0)
        ((_, length, (data,)),) = rx.take_used()
        assert length == 72 and data[12:72] == b"\x01" * 60
        assert not tap.frames_waiting()
