"""The MMIO bus: which device answers a guest access, by address.

Devices see offsets into their own window. Accesses that hit no device are answered with
zero (reads) or dropped (writes), logged once per address: the guest cannot crash the VMM
by poking at the void.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from typing import Protocol

from elvisor.log import Log

log = Log(__name__)

VALID_SIZES = (1, 2, 4, 8)
MAX_LOGGED_ADDRESSES = 256


class MmioDevice(Protocol):
    def mmio_read(self, offset: int, size: int) -> int: ...

    def mmio_write(self, offset: int, size: int, value: int) -> None: ...


class IrqLine(Protocol):
    """An interrupt line to the interrupt controller (level-sensitive)."""

    def set_level(self, level: bool) -> None: ...


@dataclass(frozen=True)
class Placement:
    """Where the builder put a device: the same record maps it and describes it to the guest."""

    kind: str  # "pl011", "pl031", "virtio_mmio": the device-tree node it gets
    base: int
    size: int
    spi: int | None = None  # its shared peripheral interrupt, counted from 0
    compatible: str | None = None  # a device of the user's: its node is kind@base with this

    @property
    def end(self) -> int:
        return self.base + self.size

    @property
    def name(self) -> str:
        return f"{self.kind}@{self.base:x}"


class BusError(ValueError):
    pass


class MmioBus:
    """Devices by address; counts each one's reads and writes (for metrics)."""

    def __init__(self) -> None:
        self._bases: list[int] = []
        self._entries: list[tuple[Placement, MmioDevice, list[int]]] = []  # [reads, writes]
        self._logged: set[int] = set()
        self._log_lock = threading.Lock()

    def add(self, placement: Placement, device: MmioDevice) -> None:
        """Map a device; overlapping windows are a bug in the machine's layout."""
        if placement.size <= 0:
            raise BusError(f"{placement.name}: empty MMIO window")
        i = bisect.bisect_right(self._bases, placement.base)
        before = self._entries[i - 1][0] if i > 0 else None
        after = self._entries[i][0] if i < len(self._entries) else None
        for other in (before, after):
            if other and placement.base < other.end and other.base < placement.end:
                raise BusError(f"{placement.name} overlaps {other.name} on the MMIO bus")
        self._bases.insert(i, placement.base)
        self._entries.insert(i, (placement, device, [0, 0]))

    @property
    def placements(self) -> list[Placement]:
        return [p for p, _, _ in self._entries]

    def describe(self, address: int) -> tuple[str, str]:
        """(device, register) at a guest physical address, as a trace names them: the device
        by its kind where it is the only one of that kind, the register by the name in the
        device's `registers` enum (its offset otherwise)."""
        entry = self._find(address, 1)
        if entry is None:
            return "unmapped", f"{address:#x}"
        placement, device, _ = entry
        kinds = [p.kind for p, _, _ in self._entries]
        name = placement.kind if kinds.count(placement.kind) == 1 else placement.name
        offset = address - placement.base
        registers = getattr(device, "registers", None)
        try:
            return name, registers(offset).name if registers is not None else f"{offset:#x}"
        except ValueError:
            return name, f"{offset:#x}"

    def counts(self) -> dict[str, tuple[int, int]]:
        """(reads, writes) the guest made of each device, by placement name."""
        return {p.name: (c[0], c[1]) for p, _, c in self._entries}

    def _find(self, address: int, size: int) -> tuple[Placement, MmioDevice, list[int]] | None:
        i = bisect.bisect_right(self._bases, address) - 1
        if i >= 0:
            entry = self._entries[i]
            if address + size <= entry[0].end:
                return entry
        return None

    def read(self, address: int, size: int) -> int:
        entry = self._find(address, size) if size in VALID_SIZES else None
        if entry is None:
            self._unmapped("read", address, size)
            return 0
        entry[2][0] += 1
        return entry[1].mmio_read(address - entry[0].base, size)

    def write(self, address: int, size: int, value: int) -> None:
        entry = self._find(address, size) if size in VALID_SIZES else None
        if entry is None:
            self._unmapped("write", address, size)
            return
        entry[2][1] += 1
        entry[1].mmio_write(address - entry[0].base, size, value)

    def _unmapped(self, what: str, address: int, size: int) -> None:
        with self._log_lock:
            if address in self._logged or len(self._logged) >= MAX_LOGGED_ADDRESSES:
                return
            self._logged.add(address)
        log.warning(
            "guest %s of %d bytes at %#x: no device there (reads as 0)", what, size, address
        )
