"""A device of your own, in Python: a counter a guest reads and sets through four registers.

    elvisor run --device docs/examples/counter.py:Counter,start=100

In the guest, busybox's `devmem` reads and writes physical addresses through /dev/mem (the
first device given with --device sits at 0x0b000000):

    devmem 0x0b000000 32       # ID: 0x454C5653 ("ELVS")
    devmem 0x0b000004 32       # COUNT: 100, then 101, ...
    devmem 0x0b000008 32 5     # STEP: count by 5 from now on
    devmem 0x0b00000c 32 1     # IRQ: raise the device's interrupt (0 lowers it)
"""

import threading
from enum import IntEnum


class Reg(IntEnum):
    ID = 0x0
    COUNT = 0x4
    STEP = 0x8
    IRQ = 0xC


MASK32 = 0xFFFF_FFFF


class Counter:
    compatible = "elvisor,example-counter"  # its device-tree node: counter@b000000
    size = 0x1000  # its MMIO window
    registers = Reg  # names for --trace exits and --stats

    def __init__(self, irq, start="0"):
        self.irq = irq  # irq.set_level(True) raises the device's interrupt
        self.count = int(start, 0) & MASK32
        self.step = 1
        self.level = False
        self.lock = threading.Lock()  # each vCPU calls in from its own thread

    def mmio_read(self, offset, size):
        with self.lock:
            if offset == Reg.ID:
                return 0x454C5653
            if offset == Reg.COUNT:
                value, self.count = self.count, (self.count + self.step) & MASK32
                return value
            if offset == Reg.STEP:
                return self.step
            if offset == Reg.IRQ:
                return int(self.level)
            return 0  # (the rest of the window reads as zero)

    def mmio_write(self, offset, size, value):
        with self.lock:
            if offset == Reg.COUNT:
                self.count = value & MASK32
            elif offset == Reg.STEP:
                self.step = value & MASK32
            elif offset == Reg.IRQ:
                self.level = bool(value & 1)
                self.irq.set_level(self.level)
