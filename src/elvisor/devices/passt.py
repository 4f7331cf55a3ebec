"""passt ("Plug A Simple Socket Transport"), a maintained user-mode network stack, as the
guest's way to the host's network without root, TAP devices or firewall rules.

passt runs as a child process on one end of a socket pair (`--fd`: no socket file, and it
quits when our end closes, even if elvisor is killed). It speaks QEMU's stream protocol:
each Ethernet frame preceded by its length, 32 bits big-endian. It answers the guest's DHCP,
and maps the gateway's address to the host's loopback.

Nothing here waits for passt: a frame for it when its socket is full is dropped (as a
congested link drops it; TCP sends it again), so that the device's I/O thread is never stuck
in a write while passt is stuck writing to us. A frame is never cut: when the socket takes
only part of one, the rest goes out before the next frame.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
from collections import deque

from elvisor.errors import UserError
from elvisor.log import Log

log = Log(__name__)

LENGTH = struct.Struct(">I")
MAX_FRAME = 65535 + 14  # IP's limit, and the Ethernet header
READ_SIZE = 256 * 1024
NOBODY = 65534
MAX_PENDING = 256  # frames received and not yet taken by the guest


class Passt:
    def __init__(self) -> None:
        exe = shutil.which("passt") or shutil.which("passt", path="/usr/bin:/usr/sbin")
        if exe is None:
            raise UserError("--net user needs passt: install it (apt-get install passt)")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [exe, "--foreground", "--quiet", "--fd", str(theirs.fileno())]
        if os.geteuid() == 0:  # passt will not run as root: nobody, by number (no passwd needed)
            argv += ["--runas", f"{NOBODY}:{NOBODY}"]
        try:
            self.process = subprocess.Popen(
                argv,
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError as e:
            ours.close()
            raise UserError(f"cannot start passt: {e.strerror}") from None
        finally:
            theirs.close()
        self.sock = ours
        self.fd = ours.fileno()
        self.frames: deque[bytes] = deque()  # complete frames for the guest
        self._partial = bytearray()
        self._buffer = bytearray(READ_SIZE)
        self._ended = False
        self._unsent = b""  # the rest of a frame passt has the start of

    def receive(self) -> bool:
        """Read what passt sent, into `frames`; False once passt has gone."""
        self._flush()
        try:
            n = self.sock.recv_into(self._buffer, READ_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            n = 0
        if n == 0:
            if not self._ended:
                self._ended = True
                log.warning("passt has ended: the guest's user-mode network is gone")
            return False
        self._partial += memoryview(self._buffer)[:n]
        while len(self._partial) >= LENGTH.size:
            (length,) = LENGTH.unpack_from(self._partial)
            if length > MAX_FRAME:
                log.warning("passt sent a frame of %d bytes: not listening to it any more", length)
                self._ended = True
                return False
            if len(self._partial) < LENGTH.size + length:
                break
            self.frames.append(bytes(self._partial[LENGTH.size : LENGTH.size + length]))
            del self._partial[: LENGTH.size + length]
        while len(self.frames) > MAX_PENDING:  # the guest is not taking them: oldest go
            self.frames.popleft()
        return True

    def send(self, frame: list[memoryview]) -> bool:
        """One Ethernet frame to passt, without waiting; False if it was dropped (passt's
        socket is full, or passt has gone)."""
        length = sum(len(v) for v in frame)
        if not 0 < length <= MAX_FRAME or self._ended or not self._flush():
            return False
        parts: list[bytes | memoryview] = [LENGTH.pack(length), *frame]
        try:
            sent = self.sock.sendmsg(parts, [], socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError as e:
            self._gone(e)
            return False
        if sent < LENGTH.size + length:
            self._unsent = b"".join(bytes(p) for p in parts)[sent:]
            self._flush()
        return True

    def _flush(self) -> bool:
        """Send the rest of a frame passt has the start of; True once nothing is left."""
        while self._unsent and not self._ended:
            try:
                sent = self.sock.send(self._unsent, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False
            except OSError as e:
                self._gone(e)
                break
            self._unsent = self._unsent[sent:]
        return True

    def _gone(self, e: OSError) -> None:
        if not self._ended:
            self._ended = True
            log.warning("passt is not there any more (%s)", e.strerror)

    def close(self) -> None:
        self._ended = True
        with contextlib.suppress(OSError):
            self.sock.close()  # passt quits when its end of the pair closes
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
