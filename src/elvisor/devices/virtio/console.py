"""virtio-console (virtio v1.2, 5.3) with one console port: the guest's hvc0.

Output (port 0's transmit queue) goes to the host's console; input from the host waits in a
backlog until the guest offers receive buffers and has opened the port. EMERG_WRITE lets the
guest write a byte through the configuration space before its queues are up.

The device speaks the multiport control protocol (5.3.6.2) for one reason: it is how the
guest says its port is open (VIRTIO_CONSOLE_PORT_OPEN). Linux offers receive buffers before
that and discards what arrives there meanwhile, so input is held back until then.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections import deque
from collections.abc import Callable
from enum import IntEnum

from elvisor.devices.virtio.device import VirtioDevice
from elvisor.devices.virtio.queue import Chain
from elvisor.devices.virtio.spec import DeviceId, bit

QUEUE_SIZE = 64
RECEIVEQ, TRANSMITQ, CONTROL_RECEIVEQ, CONTROL_TRANSMITQ = 0, 1, 2, 3  # port 0 and control
VIRTIO_CONSOLE_F_MULTIPORT = 1
VIRTIO_CONSOLE_F_EMERG_WRITE = 2
CONFIG = struct.Struct("<HHII")  # cols, rows, max_nr_ports, emerg_wr
EMERG_WR_OFFSET = 8
CONTROL = struct.Struct("<IHH")  # struct virtio_console_control: id, event, value
BACKLOG_LIMIT = 64 * 1024
OUTPUT_CHUNK = 64 * 1024
MAX_PENDING_CONTROL = 16
PORT = 0


class Event(IntEnum):
    """5.3.6.2 control events."""

    VIRTIO_CONSOLE_DEVICE_READY = 0
    VIRTIO_CONSOLE_DEVICE_ADD = 1
    VIRTIO_CONSOLE_DEVICE_REMOVE = 2
    VIRTIO_CONSOLE_PORT_READY = 3
    VIRTIO_CONSOLE_CONSOLE_PORT = 4
    VIRTIO_CONSOLE_RESIZE = 5
    VIRTIO_CONSOLE_PORT_OPEN = 6
    VIRTIO_CONSOLE_PORT_NAME = 7


class VirtioConsole(VirtioDevice):
    device_id = DeviceId.CONSOLE
    queue_sizes = (QUEUE_SIZE,) * 4
    features = bit(VIRTIO_CONSOLE_F_MULTIPORT) | bit(VIRTIO_CONSOLE_F_EMERG_WRITE)

    def __init__(self, output: Callable[[bytes], None]) -> None:
        super().__init__()
        self._output = output
        self._backlog = bytearray()
        self._lock = threading.Lock()  # the backlog: the host's input thread vs the I/O thread
        self.backlog_drained = threading.Event()  # set while the backlog has room
        self.backlog_drained.set()
        self._input = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._control: deque[bytes] = deque()  # messages for the guest
        self._open = False  # the guest has opened port 0

    def config_space(self) -> bytes:
        return CONFIG.pack(0, 0, 1, 0)

    def config_write(self, offset: int, data: bytes) -> None:
        if offset == EMERG_WR_OFFSET and data:
            self._output(data[:1])

    def watched(self) -> list[tuple[int, Callable[[], None]]]:
        return [(self._input, self._deliver)]

    def reset(self) -> None:
        super().reset()
        self._control.clear()
        self._open = False

    def close(self) -> None:
        if self._input >= 0:
            os.close(self._input)
            self._input = -1

    def queue_notified(self, index: int) -> None:
        assert self.active is not None
        if index == TRANSMITQ:
            self.active.serve(TRANSMITQ, self._transmit)
        elif index == CONTROL_TRANSMITQ:
            self.active.serve(CONTROL_TRANSMITQ, self._control_message)
        self._send_control()
        self._deliver()

    # --- host -> guest -----------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Bytes from the host's console for the guest (any thread). Check `backlog_drained`
        before giving more."""
        with self._lock:
            self._backlog += data
            if len(self._backlog) >= BACKLOG_LIMIT:
                self.backlog_drained.clear()
        os.eventfd_write(self._input, 1)

    def _deliver(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._input)
        if self.active is None or not self._open or not self.active.queues[RECEIVEQ].ready:
            return  # the input waits for the guest
        queue = self.active.queues[RECEIVEQ]
        with self._lock:
            for _ in range(queue.size):
                if not self._backlog or not (chain := queue.pop()):
                    break
                n = chain.write(memoryview(self._backlog)[: chain.writable_bytes])
                del self._backlog[:n]
                queue.push(chain.head, n)
            if len(self._backlog) < BACKLOG_LIMIT:
                self.backlog_drained.set()
            more = bool(self._backlog)
        self.active.publish(queue)
        if queue.enable_notifications() and more:  # buffers left for the rest: go on
            os.eventfd_write(self._input, 1)

    # --- guest -> host -----------------------------------------------------------------------

    def _transmit(self, chain: Chain) -> int:
        for view in chain.readable:
            for start in range(0, len(view), OUTPUT_CHUNK):
                self._output(bytes(view[start : start + OUTPUT_CHUNK]))
        return 0

    # --- the control queues (5.3.6.2) ----------------------------------------------------------

    def _control_message(self, chain: Chain) -> int:
        message = chain.read(CONTROL.size)
        if len(message) < CONTROL.size:
            return 0
        port, event, value = CONTROL.unpack(message)
        if event == Event.VIRTIO_CONSOLE_DEVICE_READY and value == 1:
            self._tell(PORT, Event.VIRTIO_CONSOLE_DEVICE_ADD, 0)
        elif port != PORT:
            pass  # there is no other port
        elif event == Event.VIRTIO_CONSOLE_PORT_READY and value == 1:
            self._tell(PORT, Event.VIRTIO_CONSOLE_CONSOLE_PORT, 1)
            self._tell(PORT, Event.VIRTIO_CONSOLE_PORT_OPEN, 1)  # the host side is there
        elif event == Event.VIRTIO_CONSOLE_PORT_OPEN:
            self._open = value == 1
        return 0

    def _tell(self, port: int, event: Event, value: int) -> None:
        if len(self._control) < MAX_PENDING_CONTROL:
            self._control.append(CONTROL.pack(port, event, value))

    def _send_control(self) -> None:
        assert self.active is not None
        queue = self.active.queues[CONTROL_RECEIVEQ]
        if not queue.ready:
            return
        while self._control and (chain := queue.pop()):
            queue.push(chain.head, chain.write(self._control.popleft()))
        self.active.publish(queue)
