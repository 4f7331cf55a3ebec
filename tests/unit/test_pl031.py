"""The PL031 RTC model (register offsets are literals from its TRM)."""

import threading

from elvisor.devices.pl031 import Pl031

DR, MR, LR, CR, IMSC, RIS, MIS, ICR = 0x00, 0x04, 0x08, 0x0C, 0x10, 0x14, 0x18, 0x1C


class Irq:
    def __init__(self) -> None:
        self.raised = threading.Event()
        self.level = False

    def set_level(self, level: bool) -> None:
        self.level = level
        if level:
            self.raised.set()


def test_time_ids_and_load() -> None:
    now = [1_700_000_000.7]
    rtc = Pl031(Irq(), lambda: now[0])
    assert rtc.mmio_read(DR, 4) == 1_700_000_000
    assert [rtc.mmio_read(o, 4) for o in range(0xFE0, 0x1000, 4)] == [
        0x31,
        0x10,
        0x04,
        0x00,
        0x0D,
        0xF0,
        0x05,
        0xB1,
    ]
    rtc.mmio_write(LR, 4, 1000)  # the guest sets its clock
    now[0] += 5
    assert rtc.mmio_read(DR, 4) == 1005 and rtc.mmio_read(LR, 4) == 1000
    assert rtc.mmio_read(CR, 4) == 1
    rtc.mmio_write(DR, 4, 0)  # read-only
    assert rtc.mmio_read(DR, 4) == 1005


def test_alarm_raises_the_interrupt_until_cleared() -> None:
    irq = Irq()
    now = [2_000_000_000.0]
    rtc = Pl031(irq, lambda: now[0])
    rtc.mmio_write(MR, 4, 2_000_000_001)
    rtc.mmio_write(IMSC, 4, 1)
    assert irq.raised.wait(10)
    assert rtc.mmio_read(RIS, 4) == 1 and rtc.mmio_read(MIS, 4) == 1 and irq.level
    rtc.mmio_write(ICR, 4, 1)
    assert rtc.mmio_read(RIS, 4) == 0 and not irq.level
    rtc.close()
