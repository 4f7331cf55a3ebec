"""The PL011 model against its Technical Reference Manual (register offsets are literals here)."""

import pytest

from elvisor.devices.pl011 import BACKLOG_LIMIT, Pl011

DR, FR, LCR_H, IMSC, RIS, MIS, ICR = 0x000, 0x018, 0x02C, 0x038, 0x03C, 0x040, 0x044
RXFE, TXFF, RXFF, TXFE = 1 << 4, 1 << 5, 1 << 6, 1 << 7
RXIM, TXIM, RTIM = 1 << 4, 1 << 5, 1 << 6
FEN = 1 << 4


class Irq:
    def __init__(self) -> None:
        self.levels: list[bool] = []

    def set_level(self, level: bool) -> None:
        self.levels.append(level)

    @property
    def level(self) -> bool:
        return bool(self.levels) and self.levels[-1]


@pytest.fixture
def uart():
    irq, out = Irq(), bytearray()
    return Pl011(irq, out.extend), irq, out


def test_id_registers_identify_an_arm_pl011(uart) -> None:
    dev, _, _ = uart
    ids = [dev.mmio_read(off, 4) for off in range(0xFE0, 0x1000, 4)]
    assert ids == [0x11, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1]


def test_transmit_and_tx_interrupt(uart) -> None:
    dev, irq, out = uart
    assert dev.mmio_read(FR, 4) & TXFE and not dev.mmio_read(FR, 4) & TXFF
    dev.mmio_write(DR, 4, ord("A") | 0x700)  # bits above 7 are not data
    assert out == b"A"
    assert dev.mmio_read(RIS, 4) & TXIM and not irq.level  # raised, masked
    dev.mmio_write(IMSC, 4, TXIM)
    assert irq.level and dev.mmio_read(MIS, 4) == TXIM
    dev.mmio_write(ICR, 4, TXIM)
    assert not irq.level and dev.mmio_read(RIS, 4) == 0


def test_input_waits_until_the_guest_listens(uart) -> None:
    dev, irq, _ = uart
    dev.receive(b"hi")
    assert dev.mmio_read(FR, 4) & RXFE  # held back: Linux would drain and discard it
    dev.mmio_write(LCR_H, 4, FEN | 0x60)
    dev.mmio_write(IMSC, 4, RXIM | RTIM)
    assert not dev.mmio_read(FR, 4) & RXFE
    assert irq.level and dev.mmio_read(MIS, 4) & RXIM
    assert [dev.mmio_read(DR, 4) for _ in range(2)] == [ord("h"), ord("i")]
    assert dev.mmio_read(FR, 4) & RXFE and not irq.level


def test_masking_rx_keeps_unread_input(uart) -> None:
    dev, _, _ = uart
    dev.mmio_write(LCR_H, 4, FEN)
    dev.receive(b"abc")
    dev.mmio_write(IMSC, 4, RXIM)
    dev.mmio_write(IMSC, 4, 0)  # Linux's probe: enable, then disable again
    for _ in range(32):  # its start-up drain finds nothing to throw away
        if dev.mmio_read(FR, 4) & RXFE:
            break
        dev.mmio_read(DR, 4)
    dev.mmio_write(IMSC, 4, RXIM | RTIM)
    assert bytes(dev.mmio_read(DR, 4) for _ in range(3)) == b"abc"


def test_fifo_depth_and_backlog(uart) -> None:
    dev, _, _ = uart
    dev.mmio_write(IMSC, 4, RXIM)
    dev.receive(bytes(range(40)))
    assert dev.mmio_read(FR, 4) & RXFF  # FIFOs off: a one-byte holding register
    dev.mmio_write(LCR_H, 4, FEN)
    got = []
    while not dev.mmio_read(FR, 4) & RXFE:
        got.append(dev.mmio_read(DR, 4))
    assert got == list(range(40))


def test_polling_guest_gets_input_without_interrupts(uart) -> None:
    dev, _, _ = uart
    dev.receive(b"x")
    for _ in range(64):
        flags = dev.mmio_read(FR, 4)
    assert not flags & RXFE
    assert dev.mmio_read(DR, 4) == ord("x")


def test_backlog_limit_throttles_the_host(uart) -> None:
    dev, _, _ = uart
    dev.receive(b"z" * BACKLOG_LIMIT)
    assert not dev.backlog_drained.is_set()
    dev.mmio_write(LCR_H, 4, FEN)
    dev.mmio_write(IMSC, 4, RXIM)
    for _ in range(32):
        dev.mmio_read(DR, 4)
    assert dev.backlog_drained.is_set()


def test_unknown_registers_read_zero_and_ignore_writes(uart) -> None:
    dev, irq, out = uart
    dev.mmio_write(0x800, 4, 0xFFFF)
    dev.mmio_write(0xFE0, 4, 0)  # the ID registers are read-only
    assert dev.mmio_read(0x800, 4) == 0 and dev.mmio_read(0xFE0, 4) == 0x11
    assert dev.mmio_read(DR, 4) == 0  # empty FIFO
    assert out == b"" and not irq.levels
