"""A guest virtual address to its guest physical address, through the guest's own stage-1
translation tables (EL1&0 regime), as a debugger reading the guest's memory needs it.

What is read: SCTLR_EL1.M (MMU off: virtual = physical), TCR_EL1 (T0SZ/T1SZ, TG0/TG1, EPD0/1,
TBI0/1) and TTBR0_EL1/TTBR1_EL1; the 4 KiB, 16 KiB and 64 KiB granules, with table, block
(where the architecture has them) and page descriptors, for 48-bit output addresses. A walk
that leaves guest RAM or meets an invalid descriptor gives None, and a walk has at most four
levels: a debugger shows an error, never a crash or a hang.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

SCTLR_M = 1 << 0
TCR_EPD0, TCR_EPD1 = 1 << 7, 1 << 23
TCR_TBI0, TCR_TBI1 = 1 << 37, 1 << 38
TG0_BITS = {0b00: 12, 0b01: 16, 0b10: 14}  # TCR_EL1.TG0: granule, as log2 of its size
TG1_BITS = {0b10: 12, 0b11: 16, 0b01: 14}  # TCR_EL1.TG1
OA_MASK = (1 << 48) - 1
VALID, TABLE = 0b01, 0b10  # descriptor bits [1:0]: 0b11 table (or page at the last level)

ReadPhys = Callable[[int], int | None]  # a 64-bit descriptor at a guest physical address


class Stage1(NamedTuple):
    """The registers that say how a vCPU translates."""

    sctlr: int
    tcr: int
    ttbr0: int
    ttbr1: int


def translate(va: int, regs: Stage1, read: ReadPhys) -> int | None:
    """The guest physical address of `va`, or None where the guest has nothing mapped."""
    va &= (1 << 64) - 1
    if not regs.sctlr & SCTLR_M:
        return va
    tcr = regs.tcr
    upper = (va >> 55) & 1  # which half: bit 55 decides, with or without top-byte-ignore
    if upper:
        size, granule = 64 - ((tcr >> 16) & 0x3F), TG1_BITS.get((tcr >> 30) & 3)
        ttbr, disabled, tbi = regs.ttbr1, tcr & TCR_EPD1, tcr & TCR_TBI1
    else:
        size, granule = 64 - (tcr & 0x3F), TG0_BITS.get((tcr >> 14) & 3)
        ttbr, disabled, tbi = regs.ttbr0, tcr & TCR_EPD0, tcr & TCR_TBI0
    if granule is None or disabled or not 16 <= size <= 52:
        return None
    top = 56 if tbi else 64  # the bits above the range must all equal the half's bit
    high = (va >> size) & ((1 << (top - size)) - 1)
    if high != (((1 << (top - size)) - 1) if upper else 0):
        return None
    stride = granule - 3  # address bits each level resolves
    levels = -(-(size - granule) // stride)
    level = 4 - levels
    table = ttbr & OA_MASK & ~1  # BADDR (bit 0 is CnP)
    offset_bits = size  # the bits of `va` still to resolve, from the top
    for _ in range(levels):
        shift = granule + (3 - level) * stride
        index = (va >> shift) & ((1 << (offset_bits - shift)) - 1)
        descriptor = read(table + 8 * index)
        if descriptor is None or not descriptor & VALID:
            return None
        if level == 3:
            if not descriptor & TABLE:
                return None  # (0b01 at the last level is reserved)
            return (descriptor & OA_MASK & ~((1 << granule) - 1)) | (va & ((1 << granule) - 1))
        if not descriptor & TABLE:  # a block: the rest of `va` is an offset into it
            if not (level == 2 or (level == 1 and granule == 12)):
                return None  # (no blocks there with this granule and 48-bit addresses)
            return (descriptor & OA_MASK & ~((1 << shift) - 1)) | (va & ((1 << shift) - 1))
        table = descriptor & OA_MASK & ~((1 << granule) - 1)
        offset_bits = shift
        level += 1
    return None
