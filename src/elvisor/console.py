"""The host end of the guest's serial console: host input to the guest, guest output out."""

from __future__ import annotations

import errno
import os
import select
import sys
from collections.abc import Callable

from elvisor.log import Log

log = Log(__name__)

STALL_LIMIT = 1.0  # seconds guest output waits for a full output before it is dropped
CURSOR_QUERY = b"\x1b[6n"  # ECMA-48 DSR 6, "where is the cursor?": a terminal answers it


class CursorQueryFilter:
    """Takes the cursor-position queries out of the guest's output (busybox's shell sends one
    at each prompt). Where the output is not a terminal nobody answers them, and they would
    show as `[6n` in a log. A query may come one byte at a time: a tail that could be the
    start of one waits for the next output."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        data = (self._held + data).replace(CURSOR_QUERY, b"")
        for n in range(min(len(CURSOR_QUERY) - 1, len(data)), 0, -1):
            if CURSOR_QUERY.startswith(data[-n:]):
                self._held = data[-n:]
                return data[:-n]
        self._held = b""
        return data


class Console:
    """`input_fd` (or None: no input) feeds the guest; `output` (an fd or a function) gets what
    the guest writes. Guest output never ends the VM: to a closed or broken output it is
    dropped; to a full one (a non-blocking pipe nobody empties) it waits, up to STALL_LIMIT
    seconds, then is dropped (with one warning) until the output takes bytes again."""

    def __init__(self, input_fd: int | None = None, output: int | Callable[[bytes], None] = 1):
        self.input_fd = input_fd
        self._output = output
        self._broken = False
        self._stalled = False
        self._warned = False
        self._filter = None if callable(output) or _is_terminal(output) else CursorQueryFilter()

    @classmethod
    def stdio(cls) -> Console:
        has_input = sys.stdin is not None and not sys.stdin.closed
        return cls(sys.stdin.fileno() if has_input else None, 1)

    def write(self, data: bytes) -> None:
        if callable(self._output):
            self._output(data)
            return
        if self._filter is not None:
            data = self._filter.feed(data)
        view = memoryview(data)
        while view and not self._broken:
            try:
                view = view[os.write(self._output, view) :]
                self._stalled = False
            except InterruptedError:
                continue
            except BlockingIOError:
                if self._stalled or not self._wait_for_room():
                    self._stall(len(view))
                    return
            except OSError as e:
                if e.errno not in (errno.EPIPE, errno.EBADF, errno.EIO):
                    raise
                self._broken = True  # nobody is listening any more; the guest runs on

    def _wait_for_room(self) -> bool:
        assert isinstance(self._output, int)
        poller = select.poll()
        poller.register(self._output, select.POLLOUT)
        return bool(poller.poll(STALL_LIMIT * 1000))

    def _stall(self, dropped: int) -> None:
        self._stalled = True
        if not self._warned:
            self._warned = True
            log.warning(
                "the console's output has not taken the guest's output for %g s: %d bytes "
                "dropped, and more will be while it stays full",
                STALL_LIMIT,
                dropped,
            )


def _is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
