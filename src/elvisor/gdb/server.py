"""`elvisor run --gdb [HOST:]PORT`: a gdb remote stub on a TCP port, for the VM it runs.

One thread serves one gdb at a time. When gdb connects, the VM stops (all-stop: every vCPU);
`continue` and `step` let it go; a breakpoint, a watchpoint, a finished step or Ctrl-C stops
it again, and gdb hears which vCPU stopped and why. `detach` takes every breakpoint out and
lets the VM run on; `kill` stops the VM. `--gdb-wait` holds the guest before its first
instruction until gdb says continue.
"""

from __future__ import annotations

import queue
import selectors
import socket
import threading

from elvisor.errors import UserError
from elvisor.gdb import rsp
from elvisor.gdb.session import SIGINT, SIGTRAP, Session
from elvisor.gdb.target import VmTarget
from elvisor.log import Log
from elvisor.vm import State, Vm, VmStateError

log = Log(__name__)

EC_BREAKPOINT = (0x30, 0x31)  # hardware breakpoint, from a lower EL or the same
EC_STEP = (0x32, 0x33)
EC_WATCHPOINT = (0x34, 0x35)
EC_BRK = 0x3C
POLL = 0.2  # seconds between looks at whether the VM has ended


def parse_address(text: str) -> tuple[str, int]:
    """`[HOST:]PORT` (HOST by default 127.0.0.1: the guest's insides are not for the network)."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:  # (0: any free port; it is printed)
        raise UserError(f"--gdb {text!r}: give [HOST:]PORT, like --gdb 1234 or --gdb 0.0.0.0:1234")
    return host or "127.0.0.1", int(port)


class Debugger:
    """The stub of one VM: listening from its creation, serving from `start()`."""

    def __init__(self, vm: Vm, address: tuple[str, int]) -> None:
        self.vm = vm
        try:
            self.listener = socket.create_server(address, reuse_port=False)
        except OSError as e:
            raise UserError(
                f"--gdb {address[0]}:{address[1]}: cannot listen: {e.strerror}"
            ) from None
        self.target = VmTarget(vm)
        self._events: queue.SimpleQueue[tuple[int, int, int]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="gdb", daemon=True)
        vm.debugger = self

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def start(self) -> None:
        self._thread.start()

    def debug_exit(self, vcpu: int, esr: int, far: int) -> None:
        """From a vCPU thread: it stopped for the debugger (see Vm._debug_exit)."""
        self._events.put((vcpu, esr, far))
        self._wake_w.send(b"!")

    def close(self) -> None:
        """The VM is going: gdb hears how it ended (if it waits to), then the stub ends."""
        self._closing = True
        self._wake_w.send(b"!")
        self.listener.close()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self._wake_r.close()
        self._wake_w.close()

    # --- the stub's thread ----------------------------------------------------------------

    def _serve(self) -> None:
        while not self._closing:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            log.warning("gdb connected: the VM stops until gdb lets it go")
            with connection:
                try:
                    self._converse(connection)
                except OSError as e:
                    log.warning("gdb connection lost: %s", e)
                except VmStateError:
                    return  # (the VM has ended)

    def _stop_vm(self) -> None:
        if self.vm.state is State.RUNNING:
            self.vm.pause()

    def _converse(self, connection: socket.socket) -> None:
        session = Session(self.target)
        reader = rsp.Reader()
        self._stop_vm()
        selector = selectors.DefaultSelector()
        selector.register(connection, selectors.EVENT_READ, "gdb")
        selector.register(self._wake_r, selectors.EVENT_READ, "event")

        def send(data: bytes) -> None:
            connection.sendall(rsp.frame(data))

        while True:
            if self.vm.result is not None:
                if session.running:
                    send(b"W00")  # (the guest powered off, or the VM ended otherwise)
                return
            if self._closing:
                return
            for key, _ in selector.select(POLL):
                if key.data == "event":
                    self._wake_r.recv(4096)
                    if session.running and (stop := self._stopped(session)) is not None:
                        send(stop)
                    continue
                data = connection.recv(65536)
                if not data:
                    self._detach()
                    return
                for event in reader.feed(data):
                    if isinstance(event, rsp.BadPacket):
                        connection.sendall(b"-")
                    elif isinstance(event, rsp.Interrupt):
                        if session.running:
                            self._stop_vm()
                            self._drain()  # (a vCPU that stopped meanwhile goes on again)
                            send(session.stopped(session.general, SIGINT))
                    else:
                        if session.acks:
                            connection.sendall(b"+")
                        command = event.data[:1]
                        reply = session.handle(event.data)
                        if command == b"D":
                            send(b"OK")
                            self._detach()
                            return
                        if command == b"k" or event.data.startswith(b"vKill"):
                            self.vm.stop()
                            return
                        if reply is not None:
                            send(reply)

    def _stopped(self, session: Session) -> bytes | None:
        """The stop reply for the first debug exit waiting, after stopping the whole VM."""
        try:
            vcpu, esr, far = self._events.get_nowait()
        except queue.Empty:
            return None
        self._stop_vm()
        self._drain()  # (others at the same moment: their vCPUs stop there again)
        ec = esr >> 26
        extra = ""
        if ec == EC_BRK:
            extra = "swbreak:;"
        elif ec in EC_BREAKPOINT:
            extra = "hwbreak:;"
        elif ec in EC_WATCHPOINT:
            watch = self.target.watch_at(far)
            kind = {"write": "watch", "read": "rwatch", "access": "awatch"}
            extra = f"{kind[watch.kind] if watch else 'watch'}:{far:x};"
        return session.stopped(vcpu, SIGTRAP, extra)

    def _drain(self) -> None:
        while not self._events.empty():
            self._events.get_nowait()

    def _detach(self) -> None:
        self.target.detach()
        if self.vm.state is State.PAUSED and self.vm.result is None:
            self.vm.resume()
