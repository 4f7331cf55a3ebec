"""Stage-1 walks over translation tables built here, for each granule and both halves."""

import pytest

from elvisor.arch.arm64.walk import Stage1, translate

TG0 = {12: 0b00 << 14, 14: 0b10 << 14, 16: 0b01 << 14}
TG1 = {12: 0b10 << 30, 14: 0b01 << 30, 16: 0b11 << 30}


class Tables:
    """Guest physical memory holding translation tables, and a mapper as an OS has one."""

    def __init__(self, granule: int, size: int) -> None:
        self.granule, self.size = granule, size
        self.words: dict[int, int] = {}
        self.next_table = 0x4100_0000
        self.roots: dict[int, int] = {0: self._table(), 1: self._table()}

    def _table(self) -> int:
        address = self.next_table
        self.next_table += 1 << self.granule
        return address

    def map(self, va: int, pa: int, level: int = 3) -> None:
        """Map the page (level 3) or block (level 1 or 2) holding `va` to `pa`."""
        stride = self.granule - 3
        levels = -(-(self.size - self.granule) // stride)
        current, table = 4 - levels, self.roots[(va >> 55) & 1]
        while True:
            shift = self.granule + (3 - current) * stride
            index = (va >> shift) & ((1 << stride) - 1)
            if current == 4 - levels:
                index = (va >> shift) & ((1 << (self.size - shift)) - 1)
            entry = table + 8 * index
            if current == level:
                self.words[entry] = pa | (0b11 if level == 3 else 0b01) | 0x400  # AF
                return
            if entry not in self.words:
                self.words[entry] = self._table() | 0b11
            table = self.words[entry] & ~0xFFF & ((1 << 48) - 1)
            table &= ~((1 << self.granule) - 1)
            current += 1

    def read(self, address: int) -> int | None:
        if not 0x4000_0000 <= address < 0x8000_0000:
            return None  # (outside guest RAM)
        return self.words.get(address, 0)

    def regs(self, t0sz: int | None = None, tbi: bool = False) -> Stage1:
        t0sz = 64 - self.size if t0sz is None else t0sz
        tcr = t0sz | (64 - self.size) << 16 | TG0[self.granule] | TG1[self.granule]
        tcr |= (1 << 37 | 1 << 38) if tbi else 0
        return Stage1(sctlr=1, tcr=tcr, ttbr0=self.roots[0], ttbr1=self.roots[1] | 1)


@pytest.mark.parametrize(("granule", "size"), [(12, 48), (12, 39), (14, 47), (16, 48), (16, 42)])
def test_pages_in_both_halves_and_nothing_else(granule: int, size: int) -> None:
    tables = Tables(granule, size)
    page = 1 << granule
    user = 0x0000_0000_0040_0000 + 3 * page
    kernel = (1 << 64) - (1 << size) + 0x1234 * page
    tables.map(user, 0x4800_0000)
    tables.map(kernel, 0x4900_0000)
    regs = tables.regs()
    assert translate(user + 0x18, regs, tables.read) == 0x4800_0018
    assert translate(kernel + page - 1, regs, tables.read) == 0x4900_0000 + page - 1
    assert translate(user + page, regs, tables.read) is None  # the next page: not mapped
    assert translate(kernel - page, regs, tables.read) is None
    assert translate(1 << size, regs, tables.read) is None  # above the lower half's range
    assert translate(0x0000_8000_0000_0000 | user, regs, tables.read) is None  # non-canonical


def test_a_block_maps_its_whole_range_and_the_mmu_off_is_identity() -> None:
    tables = Tables(12, 48)
    tables.map(0xFFFF_0000_4000_0000, 0x4000_0000, level=1)  # 1 GiB block
    tables.map(0x0000_0000_0020_0000, 0x4060_0000, level=2)  # 2 MiB block
    regs = tables.regs()
    assert translate(0xFFFF_0000_7FFF_FFF8, regs, tables.read) == 0x7FFF_FFF8
    assert translate(0x0000_0000_003F_0001, regs, tables.read) == 0x407F_0001
    assert translate(0x1234_5678, regs._replace(sctlr=0), tables.read) == 0x1234_5678


def test_top_byte_ignored_where_tcr_says_so() -> None:
    tables = Tables(12, 48)
    tables.map(0x0000_0000_0040_0000, 0x4800_0000)
    tagged = 0x2A00_0000_0040_0010
    assert translate(tagged, tables.regs(), tables.read) is None
    assert translate(tagged, tables.regs(tbi=True), tables.read) == 0x4800_0010


def test_hostile_tables_end_in_none() -> None:
    tables = Tables(12, 48)
    regs = tables.regs()
    root = tables.roots[0]
    tables.words[root] = 0x7FFF_F000_0000 | 0b11  # a table outside guest RAM
    assert translate(0x10, regs, tables.read) is None
    tables.words[root] = 0x4000_0000 | 0b01  # a block at level 0: none with 4 KiB pages
    assert translate(0x10, regs, tables.read) is None
    tables.words[root] = root | 0b11  # a table that maps itself: the walk ends at level 3
    assert translate(0x10, regs, tables.read) == root + 0x10
    assert translate(0x10, regs._replace(tcr=regs.tcr | 1 << 7), tables.read) is None  # EPD0
    assert translate(0x10, regs._replace(tcr=(regs.tcr & ~0x3F) | 63), tables.read) is None
