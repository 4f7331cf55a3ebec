"""The host terminal: raw mode for a guest console, always restored."""

from __future__ import annotations

import os
import sys
import termios
import tty
from collections.abc import Iterator
from contextlib import contextmanager

CTRL_A = 0x01


def is_interactive() -> bool:
    """Both standard input and output are a terminal (either may even be closed)."""
    return all(stream is not None and stream.isatty() for stream in (sys.stdin, sys.stdout))


@contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Put the terminal on `fd` in raw mode for the duration; restored on every exit path."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def terminal_size(fd: int) -> tuple[int, int]:
    """(rows, columns) of the terminal on `fd`, or (24, 80)."""
    try:
        size = os.get_terminal_size(fd)
        return size.lines, size.columns
    except OSError:
        return 24, 80


class EscapeDecoder:
    """QEMU's console escape: Ctrl-A x quits, Ctrl-A Ctrl-A sends one Ctrl-A."""

    def __init__(self) -> None:
        self._escape = False
        self.quit = False

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            if self._escape:
                self._escape = False
                if byte in (ord("x"), ord("X")):
                    self.quit = True
                    break
                if byte != CTRL_A:
                    out.append(CTRL_A)
                out.append(byte)
            elif byte == CTRL_A:
                self._escape = True
            else:
                out.append(byte)
        return bytes(out)
