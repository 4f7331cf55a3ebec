"""The lab's console stream: the command's output, with the init's markers taken out.

The lab's init writes two marker lines on the serial console, each carrying a nonce that is
new for every run (so no program's output can forge them):

    \\x1eelvisor-lab-start-NONCE UPTIME    the command is about to start (kernel uptime, s)
    \\x1eelvisor-lab-exit-NONCE STATUS     the command ended with this exit status

Everything else is the command's output (before the start marker: the boot log).
"""

from __future__ import annotations

from dataclasses import dataclass

RS = b"\x1e"  # ASCII record separator: starts every marker
MAX_MARKER_LINE = 128


@dataclass(frozen=True)
class Output:
    data: bytes


@dataclass(frozen=True)
class Started:
    uptime: float


@dataclass(frozen=True)
class Exited:
    status: int


Event = Output | Started | Exited


class MarkerScanner:
    """Splits console bytes into output and marker events; markers may arrive in pieces."""

    def __init__(self, nonce: str) -> None:
        self._markers = (
            (RS + b"elvisor-lab-start-" + nonce.encode(), self._started),
            (RS + b"elvisor-lab-exit-" + nonce.encode(), self._exited),
        )
        self._pending = b""

    @staticmethod
    def _started(arg: bytes) -> Event:
        try:
            return Started(float(arg))
        except ValueError:
            return Started(0.0)

    @staticmethod
    def _exited(arg: bytes) -> Event:
        try:
            return Exited(int(arg))
        except ValueError:
            return Exited(255)

    def feed(self, chunk: bytes) -> list[Event]:
        buf = self._pending + chunk
        self._pending = b""
        events: list[Event] = []
        while buf:
            at = buf.find(RS)
            if at < 0:
                events.append(Output(buf))
                break
            if at:
                events.append(Output(buf[:at]))
                buf = buf[at:]
            consumed = self._marker(buf, events)
            if consumed is None:  # maybe a marker still arriving
                self._pending = buf
                break
            buf = buf[consumed:]
        return self._merge(events)

    def _marker(self, buf: bytes, events: list[Event]) -> int | None:
        """How many bytes at the start of `buf` (which starts with RS) were consumed."""
        for marker, make in self._markers:
            if buf.startswith(marker):
                end = buf.find(b"\n", len(marker))
                if end < 0:
                    return None if len(buf) < MAX_MARKER_LINE else self._literal(buf, events)
                events.append(make(buf[len(marker) : end].strip()))
                return end + 1
            if marker.startswith(buf):
                return None
        return self._literal(buf, events)

    @staticmethod
    def _literal(buf: bytes, events: list[Event]) -> int:
        events.append(Output(buf[:1]))
        return 1

    @staticmethod
    def _merge(events: list[Event]) -> list[Event]:
        merged: list[Event] = []
        for event in events:
            if isinstance(event, Output) and merged and isinstance(merged[-1], Output):
                merged[-1] = Output(merged[-1].data + event.data)
            else:
                merged.append(event)
        return merged

    def flush(self) -> bytes:
        """What is held back at the end of the stream (an unfinished marker-like line)."""
        pending, self._pending = self._pending, b""
        return pending
