"""The host end of the guest's serial console: host input to the guest, guest output out."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable


class Console:
    """`input_fd` (or None: no input) feeds the guest; `output` (an fd or a function) gets what
    the guest writes. Guest output to a closed or broken output is dropped, never fatal."""

    def __init__(self, input_fd: int | None = None, output: int | Callable[[bytes], None] = 1):
        self.input_fd = input_fd
        self._output = output
        self._broken = False

    @classmethod
    def stdio(cls) -> Console:
        has_input = sys.stdin is not None and not sys.stdin.closed
        return cls(sys.stdin.fileno() if has_input else None, 1)

    def write(self, data: bytes) -> None:
        if callable(self._output):
            self._output(data)
            return
        view = memoryview(data)
        while view and not self._broken:
            try:
                view = view[os.write(self._output, view) :]
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno not in (errno.EPIPE, errno.EBADF, errno.EIO):
                    raise
                self._broken = True  # nobody is listening any more; the guest runs on
