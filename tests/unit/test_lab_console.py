"""Marker scanning on the lab's console, and the Ctrl-A escape of interactive sessions."""

import pytest

from elvisor.lab.console import Exited, MarkerScanner, Output, Started
from elvisor.terminal import EscapeDecoder

NONCE = "0123abcd"
STREAM = (
    b"boot log\r\n"
    b"\x1eelvisor-lab-start-0123abcd 2.54\n"
    b"hello \x1e world\n"  # a lone RS is output
    b"\x1eelvisor-lab-start-ffffffff 1.0\n"  # another nonce: output, not a marker
    b"last line without newline"
    b"\x1eelvisor-lab-exit-0123abcd 7\r\n"
    b"[    2.8] reboot: Power down\r\n"
)


def scan(chunks: list[bytes]) -> list:
    scanner = MarkerScanner(NONCE)
    events = [e for chunk in chunks for e in scanner.feed(chunk)]
    assert scanner.flush() == b""
    merged: list = []
    for event in events:  # chunking may split output: join neighbours to compare
        if isinstance(event, Output) and merged and isinstance(merged[-1], Output):
            merged[-1] = Output(merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


EXPECTED = [
    Output(b"boot log\r\n"),
    Started(2.54),
    Output(b"hello \x1e world\n\x1eelvisor-lab-start-ffffffff 1.0\nlast line without newline"),
    Exited(7),
    Output(b"[    2.8] reboot: Power down\r\n"),
]


def test_whole_stream() -> None:
    assert scan([STREAM]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16])
def test_any_chunking_gives_the_same_events(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert scan(chunks) == EXPECTED


def test_every_split_point() -> None:
    for cut in range(len(STREAM)):
        assert scan([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


def test_marker_without_end_of_line_is_held_then_released() -> None:
    scanner = MarkerScanner(NONCE)
    assert scanner.feed(b"x\x1eelvisor-lab-ex") == [Output(b"x")]
    assert scanner.flush() == b"\x1eelvisor-lab-ex"


def test_overlong_marker_line_is_output() -> None:
    scanner = MarkerScanner(NONCE)
    junk = b"\x1eelvisor-lab-exit-0123abcd " + b"9" * 200
    events = scanner.feed(junk)
    assert b"".join(e.data for e in events if isinstance(e, Output)) + scanner.flush() == junk
    assert not any(isinstance(e, Exited) for e in events)


def test_garbled_status_is_a_failure() -> None:
    assert MarkerScanner(NONCE).feed(b"\x1eelvisor-lab-exit-0123abcd x\n") == [Exited(255)]


@pytest.mark.parametrize(
    ("keys", "sent", "quit"),
    [
        (b"ls\r", b"ls\r", False),
        (b"\x01x", b"", True),
        (b"ab\x01xcd", b"ab", True),
        (b"\x01\x01", b"\x01", False),
        (b"\x01c", b"\x01c", False),
    ],
)
def test_escape(keys: bytes, sent: bytes, quit: bool) -> None:
    decoder = EscapeDecoder()
    assert decoder.feed(keys) == sent
    assert decoder.quit is quit


def test_escape_split_across_reads() -> None:
    decoder = EscapeDecoder()
    assert decoder.feed(b"a\x01") == b"a"
    assert decoder.feed(b"\x01b") == b"\x01b"
    assert decoder.feed(b"\x01") == b""
    assert decoder.feed(b"x") == b"" and decoder.quit
