"""ARM PrimeCell UART (PL011), as Linux's amba-pl011 driver and earlycon use it.

Register names and bits follow the PL011 Technical Reference Manual (ARM DDI 0183).
Transmission is instant (the TX FIFO is always empty); received bytes wait in a 16-byte FIFO,
and input beyond it waits in a host-side backlog that refills the FIFO as the guest reads.

Host input only enters the FIFO while the guest listens: while a receive interrupt is enabled
in UARTIMSC, or once the guest has shown it polls UARTFR for input (many reads with no UARTDR
access in between, unlike a transmit loop's one read per byte sent). When the guest masks the
receive interrupts again, what it has not read goes back to the backlog. Linux's driver
enables them briefly while probing, then drains and discards the FIFO before it starts
listening for good: this way input piped in at boot survives that, and reaches the shell.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from enum import IntEnum, IntFlag

from elvisor.devices.bus import IrqLine


class Reg(IntEnum):
    UARTDR = 0x000
    UARTRSR = 0x004  # UARTECR on writes
    UARTFR = 0x018
    UARTILPR = 0x020
    UARTIBRD = 0x024
    UARTFBRD = 0x028
    UARTLCR_H = 0x02C
    UARTCR = 0x030
    UARTIFLS = 0x034
    UARTIMSC = 0x038
    UARTRIS = 0x03C
    UARTMIS = 0x040
    UARTICR = 0x044
    UARTDMACR = 0x048


class Flag(IntFlag):
    """UARTFR bits."""

    BUSY = 1 << 3
    RXFE = 1 << 4
    TXFF = 1 << 5
    RXFF = 1 << 6
    TXFE = 1 << 7


class Int(IntFlag):
    """UARTRIS/UARTMIS/UARTIMSC/UARTICR bits."""

    RXIS = 1 << 4
    TXIS = 1 << 5
    RTIS = 1 << 6
    ALL = 0x7FF


LCR_H_FEN = 1 << 4  # FIFOs enabled
FIFO_DEPTH = 16
# UARTPeriphID0-3 (part 0x011, designer ARM 0x41, revision 1) and UARTPCellID0-3
ID_REGISTERS = {
    0xFE0: 0x11, 0xFE4: 0x10, 0xFE8: 0x14, 0xFEC: 0x00,
    0xFF0: 0x0D, 0xFF4: 0xF0, 0xFF8: 0x05, 0xFFC: 0xB1,
}  # fmt: skip
BACKLOG_LIMIT = 64 * 1024
POLLING_READS = 64  # UARTFR reads in a row, without UARTDR access, that mean "polling for input"
WRITABLE = {Reg.UARTILPR, Reg.UARTIBRD, Reg.UARTFBRD, Reg.UARTCR, Reg.UARTIFLS, Reg.UARTDMACR}


class Pl011:
    registers = Reg  # (register names, for --trace and --stats)

    def __init__(self, irq: IrqLine, output: Callable[[bytes], None]) -> None:
        self._irq = irq
        self._output = output
        self._lock = threading.Lock()
        self._rx: deque[int] = deque()
        self._backlog = bytearray()
        self.backlog_drained = threading.Event()  # set while the backlog has room
        self.backlog_drained.set()
        self._level = False
        self._regs: dict[int, int] = {Reg.UARTCR: 0x300, Reg.UARTIFLS: 0x12}
        self._lcr_h = 0
        self._imsc = 0
        self._ris = 0
        self._polled = False  # the guest polls for input: it always listens
        self._fr_reads = 0

    # --- guest side ----------------------------------------------------------------------

    def mmio_read(self, offset: int, size: int) -> int:
        with self._lock:
            if offset == Reg.UARTDR:
                self._fr_reads = 0
                return self._read_dr()
            if offset == Reg.UARTFR:
                self._fr_reads += 1
                if self._fr_reads == POLLING_READS and not self._polled:
                    self._polled = True
                    self._refill()
                return self._flags()
            if offset == Reg.UARTLCR_H:
                return self._lcr_h
            if offset == Reg.UARTIMSC:
                return self._imsc
            if offset == Reg.UARTRIS:
                return self._ris
            if offset == Reg.UARTMIS:
                return self._ris & self._imsc
            if offset in ID_REGISTERS:
                return ID_REGISTERS[offset]
            return self._regs.get(offset, 0)  # UARTRSR: no errors; unknown: reads as zero

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if offset == Reg.UARTDR:
            self._output(bytes([value & 0xFF]))
            with self._lock:
                self._fr_reads = 0
                self._ris |= Int.TXIS  # sent at once: the TX FIFO is empty again
                self._update()
            return
        with self._lock:
            if offset == Reg.UARTLCR_H:
                self._lcr_h = value & 0xFF
                self._refill()
            elif offset == Reg.UARTIMSC:
                listened = self._listening()
                self._imsc = value & Int.ALL
                if listened and not self._listening():  # unread input waits for next time
                    self._backlog[:0] = bytes(self._rx)
                    self._rx.clear()
                    self._ris &= ~(Int.RXIS | Int.RTIS)
                self._refill()
            elif offset == Reg.UARTICR:
                self._ris &= ~value
            elif offset in WRITABLE:
                self._regs[offset] = value & 0xFFFF
            self._update()  # writes elsewhere (UARTECR, ID registers) are ignored

    def _depth(self) -> int:
        return FIFO_DEPTH if self._lcr_h & LCR_H_FEN else 1

    def _flags(self) -> int:
        flags = Flag.TXFE
        if not self._rx:
            flags |= Flag.RXFE
        if len(self._rx) >= self._depth():
            flags |= Flag.RXFF
        return int(flags)

    def _read_dr(self) -> int:
        if not self._rx:
            return 0
        value = self._rx.popleft()
        self._refill()
        if not self._rx:
            self._ris &= ~(Int.RXIS | Int.RTIS)
        self._update()
        return value

    def _listening(self) -> bool:
        return self._polled or bool(self._imsc & (Int.RXIS | Int.RTIS))

    def _refill(self) -> None:
        if not self._listening():
            return
        room = self._depth() - len(self._rx)
        if room > 0 and self._backlog:
            self._rx.extend(self._backlog[:room])
            del self._backlog[:room]
            if len(self._backlog) < BACKLOG_LIMIT:
                self.backlog_drained.set()
        if self._rx:
            self._ris |= Int.RXIS

    def _update(self) -> None:
        level = bool(self._ris & self._imsc)
        if level != self._level:
            self._level = level
            self._irq.set_level(level)

    # --- snapshots -----------------------------------------------------------------------

    def state(self) -> dict[str, object]:
        with self._lock:
            return {
                "regs": {str(k): v for k, v in self._regs.items()},
                "lcr_h": self._lcr_h,
                "imsc": self._imsc,
                "ris": self._ris,
                "rx": bytes(self._rx).hex(),
                "backlog": bytes(self._backlog).hex(),
                "polled": self._polled,
            }

    def set_state(self, state: dict[str, object]) -> None:
        """Take back a `state()` (and drive the interrupt line as it says)."""
        regs = state["regs"]
        assert isinstance(regs, dict)
        with self._lock:
            self._regs = {int(k): int(v) & 0xFFFF for k, v in regs.items() if int(k) in WRITABLE}
            self._lcr_h = int(str(state["lcr_h"])) & 0xFF
            self._imsc = int(str(state["imsc"])) & Int.ALL
            self._ris = int(str(state["ris"])) & Int.ALL
            self._rx = deque(bytes.fromhex(str(state["rx"]))[:FIFO_DEPTH])
            self._backlog = bytearray.fromhex(str(state["backlog"]))[:BACKLOG_LIMIT]
            self._polled = bool(state["polled"])
            self._level = False
            self._update()

    # --- host side -----------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Bytes from the host for the guest to read. Check `backlog_drained` before more."""
        with self._lock:
            self._backlog += data
            if len(self._backlog) >= BACKLOG_LIMIT:
                self.backlog_drained.clear()
            self._refill()
            self._update()
