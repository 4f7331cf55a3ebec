"""The GDB remote serial protocol's framing: `$data#checksum` packets, the `+`/`-`
acknowledgements, and the interrupt byte (Ctrl-C, 0x03) that gdb sends while the target runs.

The checksum is the sum of the data's bytes modulo 256, as two lower-case hex digits. In the
data, `#`, `$`, `}` and `*` are escaped as `}` followed by the byte XOR 0x20; a reply never
uses run-length encoding (gdb does not need it). Bytes are what gdb sends and reads: nothing
here is text.
"""

from __future__ import annotations

from dataclasses import dataclass

INTERRUPT = 0x03
ESCAPE = 0x7D
ESCAPED = frozenset(b"#$}*")
MAX_PACKET = 0x4000  # data bytes in one packet: what qSupported announces as PacketSize


def checksum(data: bytes) -> bytes:
    return b"%02x" % (sum(data) & 0xFF)


def escape(data: bytes) -> bytes:
    out = bytearray()
    for byte in data:
        if byte in ESCAPED:
            out += bytes((ESCAPE, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    out = bytearray()
    escaped = False
    for byte in data:
        if escaped:
            out.append(byte ^ 0x20)
            escaped = False
        elif byte == ESCAPE:
            escaped = True
        else:
            out.append(byte)
    return bytes(out)


def frame(data: bytes) -> bytes:
    """A packet carrying `data` (escaped here)."""
    body = escape(data)
    return b"$" + body + b"#" + checksum(body)


@dataclass(frozen=True)
class Packet:
    data: bytes  # unescaped


@dataclass(frozen=True)
class Interrupt:
    pass


@dataclass(frozen=True)
class BadPacket:
    """A packet whose checksum did not match (answered with `-`), or too long."""

    why: str


Event = Packet | Interrupt | BadPacket


class Reader:
    """Bytes from gdb in, events out; acknowledgements (`+`, `-`) are dropped here."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._in_packet = False

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for byte in data:
            if not self._in_packet:
                if byte == ord("$"):
                    self._in_packet = True
                    self._buffer.clear()
                elif byte == INTERRUPT:
                    events.append(Interrupt())
                continue  # (+, -, and noise between packets)
            self._buffer.append(byte)
            if len(self._buffer) > 2 * MAX_PACKET + 3:
                self._in_packet = False
                events.append(BadPacket("a packet longer than the PacketSize announced"))
                continue
            if len(self._buffer) >= 3 and self._buffer[-3] == ord("#"):
                body, given = bytes(self._buffer[:-3]), bytes(self._buffer[-2:])
                self._in_packet = False
                if given.lower() != checksum(body):
                    events.append(BadPacket(f"checksum {given!r}, not {checksum(body)!r}"))
                else:
                    events.append(Packet(unescape(body)))
        return events
