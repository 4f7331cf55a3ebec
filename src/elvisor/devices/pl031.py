"""ARM PrimeCell real-time clock (PL031): the guest's wall-clock time, from the host's.

Register names follow the PL031 Technical Reference Manual (ARM DDI 0224).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import IntEnum

from elvisor.devices.bus import IrqLine


class Reg(IntEnum):
    RTCDR = 0x000  # data: the current time, in seconds
    RTCMR = 0x004  # match
    RTCLR = 0x008  # load
    RTCCR = 0x00C  # control: bit 0 starts the counter (always running here)
    RTCIMSC = 0x010
    RTCRIS = 0x014
    RTCMIS = 0x018
    RTCICR = 0x01C


RTCINTR = 1  # the interrupt bit of IMSC/RIS/MIS/ICR
# RTCPeriphID0-3 (part 0x031, designer ARM 0x41) and RTCPCellID0-3
ID_REGISTERS = {
    0xFE0: 0x31, 0xFE4: 0x10, 0xFE8: 0x04, 0xFEC: 0x00,
    0xFF0: 0x0D, 0xFF4: 0xF0, 0xFF8: 0x05, 0xFFC: 0xB1,
}  # fmt: skip
MASK32 = 0xFFFF_FFFF


class Pl031:
    registers = Reg  # (register names, for --trace and --stats)

    def __init__(self, irq: IrqLine, clock: Callable[[], float] = time.time) -> None:
        self._irq = irq
        self._clock = clock
        self._lock = threading.Lock()
        self._offset = 0  # guest seconds minus host seconds
        self._match = 0
        self._loaded = 0
        self._imsc = 0
        self._ris = 0
        self._level = False
        self._alarm: threading.Timer | None = None

    def _now(self) -> int:
        return (int(self._clock()) + self._offset) & MASK32

    def mmio_read(self, offset: int, size: int) -> int:
        with self._lock:
            values = {
                Reg.RTCDR: self._now(),
                Reg.RTCMR: self._match,
                Reg.RTCLR: self._loaded,
                Reg.RTCCR: 1,
                Reg.RTCIMSC: self._imsc,
                Reg.RTCRIS: self._ris,
                Reg.RTCMIS: self._ris & self._imsc,
            }
            return values.get(offset, ID_REGISTERS.get(offset, 0))  # type: ignore[call-overload]

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        value &= MASK32
        with self._lock:
            if offset == Reg.RTCLR:
                self._loaded = value
                self._offset = value - int(self._clock())
            elif offset == Reg.RTCMR:
                self._match = value
            elif offset == Reg.RTCIMSC:
                self._imsc = value & RTCINTR
            elif offset == Reg.RTCICR:
                self._ris &= ~value
            else:
                return  # RTCDR, RTCCR (the counter always runs) and the rest: read-only
            self._schedule_alarm()
            self._update()

    def _schedule_alarm(self) -> None:
        if self._alarm:
            self._alarm.cancel()
            self._alarm = None
        delay = (self._match - self._now()) & MASK32
        if self._imsc and delay and delay < 366 * 24 * 3600:
            self._alarm = threading.Timer(delay, self._ring)
            self._alarm.daemon = True
            self._alarm.start()

    def _ring(self) -> None:
        with self._lock:
            self._ris |= RTCINTR
            self._update()

    def _update(self) -> None:
        level = bool(self._ris & self._imsc)
        if level != self._level:
            self._level = level
            self._irq.set_level(level)

    def state(self) -> dict[str, int]:
        with self._lock:
            return {"offset": self._offset, "match": self._match, "loaded": self._loaded,
                    "imsc": self._imsc, "ris": self._ris}  # fmt: skip

    def set_state(self, state: dict[str, int]) -> None:
        """Take back a `state()`: the guest's clock keeps its offset from the host's."""
        with self._lock:
            self._offset = int(state["offset"])
            self._match = int(state["match"]) & MASK32
            self._loaded = int(state["loaded"]) & MASK32
            self._imsc = int(state["imsc"]) & RTCINTR
            self._ris = int(state["ris"]) & RTCINTR
            self._schedule_alarm()
            self._update()

    def close(self) -> None:
        with self._lock:
            if self._alarm:
                self._alarm.cancel()
