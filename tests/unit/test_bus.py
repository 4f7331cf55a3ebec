"""The MMIO bus: devices see offsets; the void reads zero and is logged once."""

import logging

import pytest

from elvisor.devices.bus import BusError, MmioBus, Placement


class Recorder:
    def __init__(self) -> None:
        self.accesses: list[tuple] = []

    def mmio_read(self, offset: int, size: int) -> int:
        self.accesses.append(("r", offset, size))
        return 0xAB

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self.accesses.append(("w", offset, size, value))


def test_dispatch_by_offset() -> None:
    bus, a, b = MmioBus(), Recorder(), Recorder()
    bus.add(Placement("pl011", 0x0900_0000, 0x1000, 1), a)
    bus.add(Placement("pl031", 0x0901_0000, 0x1000, 2), b)
    assert bus.read(0x0900_0018, 4) == 0xAB
    bus.write(0x0901_0008, 4, 7)
    assert a.accesses == [("r", 0x18, 4)] and b.accesses == [("w", 0x8, 4, 7)]
    assert [p.name for p in bus.placements] == ["pl011@9000000", "pl031@9010000"]


def test_overlap_is_rejected() -> None:
    bus = MmioBus()
    bus.add(Placement("pl011", 0x1000, 0x1000), Recorder())
    for base in (0x0800, 0x1FFF, 0x1800):
        with pytest.raises(BusError, match="overlaps"):
            bus.add(Placement("pl031", base, 0x1000), Recorder())
    bus.add(Placement("pl031", 0x2000, 0x1000), Recorder())  # adjacent is fine


def test_unmapped_reads_zero_logged_once(caplog) -> None:
    bus, dev = MmioBus(), Recorder()
    bus.add(Placement("pl011", 0x1000, 0x1000), dev)
    with caplog.at_level(logging.WARNING):
        assert bus.read(0x5000, 4) == 0
        assert bus.read(0x5000, 4) == 0
        bus.write(0x5000, 4, 1)
        assert bus.read(0x1FFE, 4) == 0  # straddles the window's end
        assert bus.read(0x1000, 3) == 0  # not an access size
    assert dev.accesses == []
    assert len([r for r in caplog.records if "0x5000" in r.getMessage()]) == 1
