"""The host end of the console: guest output to a full, closed or non-terminal output."""

import fcntl
import logging
import os
import threading

import pytest

from elvisor import console as console_module
from elvisor.console import Console, CursorQueryFilter
from elvisor.devices.pl011 import Pl011

DR = 0x000  # UARTDR (PL011 TRM)


class Irq:
    def set_level(self, level: bool) -> None:
        pass


@pytest.fixture
def full_pipe():
    """A pipe whose write end is non-blocking and full (as a stdout shared with a program
    that set O_NONBLOCK, nobody reading it)."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    try:
        while True:
            os.write(w, b"." * 4096)
    except BlockingIOError:
        pass
    yield r, w
    os.close(r)
    os.close(w)


def drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    return data


def test_output_to_a_full_pipe_waits_for_the_reader(full_pipe):
    r, w = full_pipe
    received = bytearray()

    def reader() -> None:
        while len(received) < 4096 + 100_000:
            received.extend(os.read(r, 65536))

    thread = threading.Thread(target=reader)
    thread.start()
    Console(None, w).write(bytes(range(100)) * 1000)  # the guest's output, all of it
    thread.join(30)
    assert received[4096:] == bytes(range(100)) * 1000


def test_output_nobody_takes_is_dropped_with_one_warning(full_pipe, monkeypatch, caplog):
    """Through the PL011, as a guest writes: the vCPU goes on (no exception escapes
    mmio_write), and the user is told once."""
    r, w = full_pipe
    monkeypatch.setattr(console_module, "STALL_LIMIT", 0.05)
    uart = Pl011(Irq(), Console(None, w).write)
    with caplog.at_level(logging.WARNING):
        for byte in b"hello\n" * 50:
            uart.mmio_write(DR, 4, byte)
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1
    drain(r)
    uart.mmio_write(DR, 4, ord("!"))  # room again: output flows again
    assert drain(r) == b"!"


def test_output_to_a_closed_pipe_is_dropped():
    r, w = os.pipe()
    os.close(r)
    try:
        Console(None, w).write(b"nobody hears this")  # (EPIPE: SIGPIPE is ignored by Python)
    finally:
        os.close(w)


def test_cursor_queries_are_taken_out_byte_by_byte():
    query_filter = CursorQueryFilter()
    out = b"".join(query_filter.feed(bytes([b])) for b in b"/ # \x1b[6nls\x1b[1mbold\x1b[")
    assert out == b"/ # ls\x1b[1mbold"
    assert query_filter.feed(b"0m") == b"\x1b[0m"


def test_cursor_queries_leave_a_pipe_clean_and_reach_a_terminal():
    r, w = os.pipe()
    try:
        piped = Console(None, w)
        for byte in b"/ # \x1b[6n":
            piped.write(bytes([byte]))
        assert drain(r) == b"/ # "
    finally:
        os.close(r)
        os.close(w)
    main, tty = os.openpty()
    try:
        Console(None, tty).write(b"/ # \x1b[6n")  # a terminal answers it: it goes through
        assert os.read(main, 100).endswith(b"\x1b[6n")
    finally:
        os.close(main)
        os.close(tty)
