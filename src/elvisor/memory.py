"""Guest RAM: anonymous host mappings, addressed by guest physical address (GPA).

Every access the VMM makes on the guest's behalf goes through `check_range`, which checks
the whole span [gpa, gpa + length) against one region: a guest-controlled address or length
can never reach host memory outside guest RAM. Pages are only backed when touched, so a
1 GiB guest that uses 60 MiB costs 60 MiB.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
from dataclasses import dataclass

# Linux's MAP_NORESERVE (asm-generic/mman.h); Python's mmap module names it from 3.13 on
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
ZEROS = bytes(1 << 20)


class GuestMemoryError(ValueError):
    """An access outside guest RAM (or a span that is not entirely inside one region)."""


def align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


@dataclass
class Region:
    """One contiguous stretch of guest RAM and the host mapping that backs it."""

    gpa: int
    size: int
    slot: int
    mapping: mmap.mmap
    host_addr: int

    @property
    def end(self) -> int:
        return self.gpa + self.size


class GuestMemory:
    """Guest RAM regions; sizes are rounded up to the host's page size.

    With `file` (a snapshot's memory), the regions are that file's contents, one after the
    other, mapped copy-on-write: a page is read from the file when first touched, and the
    guest's writes stay in this process."""

    def __init__(
        self, layout: list[tuple[int, int]], page_size: int = mmap.PAGESIZE, file: int = -1
    ) -> None:
        self.page_size = page_size
        self.regions: list[Region] = []
        self._anchors: list[ctypes.c_char] = []
        try:
            offset = 0
            for slot, (gpa, size) in enumerate(sorted(layout)):
                offset += self._add(slot, gpa, size, file, offset)
        except BaseException:
            self.close()
            raise

    def _add(self, slot: int, gpa: int, size: int, file: int, offset: int) -> int:
        if gpa % self.page_size:
            raise GuestMemoryError(f"RAM at {gpa:#x} is not aligned to {self.page_size} bytes")
        size = align_up(size, self.page_size)
        if size <= 0:
            raise GuestMemoryError("a RAM region needs a size")
        if self.regions and gpa < self.regions[-1].end:
            raise GuestMemoryError(f"RAM at {gpa:#x} overlaps the region before it")
        anonymous = mmap.MAP_ANONYMOUS if file < 0 else 0
        mapping = mmap.mmap(
            file,
            size,
            flags=mmap.MAP_PRIVATE | anonymous | MAP_NORESERVE,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
            offset=offset if file >= 0 else 0,
        )
        anchor = ctypes.c_char.from_buffer(mapping)  # pins the mapping; gives its address
        self._anchors.append(anchor)
        self.regions.append(Region(gpa, size, slot, mapping, ctypes.addressof(anchor)))
        return size

    @property
    def size(self) -> int:
        return sum(r.size for r in self.regions)

    def check_range(self, gpa: int, length: int) -> tuple[Region, int]:
        """The region holding all of [gpa, gpa + length), and gpa's offset in it."""
        if length < 0 or gpa < 0:
            raise GuestMemoryError(f"bad guest memory access: {length} bytes at {gpa:#x}")
        for region in self.regions:
            if region.gpa <= gpa < region.end or (length == 0 and gpa == region.end):
                if gpa + length > region.end:
                    break
                return region, gpa - region.gpa
        raise GuestMemoryError(f"{length} bytes at {gpa:#x} are not inside guest RAM")

    def view(self, gpa: int, length: int) -> memoryview:
        """A zero-copy, writable view of guest RAM."""
        region, offset = self.check_range(gpa, length)
        return memoryview(region.mapping)[offset : offset + length]

    def host_address(self, gpa: int, length: int) -> int:
        """Where [gpa, gpa + length) is in this process (for the kernel's vhost)."""
        region, offset = self.check_range(gpa, length)
        return region.host_addr + offset

    def read(self, gpa: int, length: int) -> bytes:
        region, offset = self.check_range(gpa, length)
        return region.mapping[offset : offset + length]

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        """Write all of `data`, or (if any of it falls outside RAM) nothing."""
        region, offset = self.check_range(gpa, len(data))
        region.mapping[offset : offset + len(data)] = data

    def zero(self, gpa: int, length: int) -> None:
        """Fill [gpa, gpa + length) with zeros (all of it, or nothing if it is not in RAM)."""
        view = self.view(gpa, length)
        for start in range(0, length, len(ZEROS)):
            chunk = view[start : start + len(ZEROS)]
            chunk[:] = ZEROS[: len(chunk)]

    def read_u32(self, gpa: int) -> int:
        return int.from_bytes(self.read(gpa, 4), "little")

    def read_u64(self, gpa: int) -> int:
        return int.from_bytes(self.read(gpa, 8), "little")

    def write_u32(self, gpa: int, value: int) -> None:
        self.write(gpa, value.to_bytes(4, "little"))

    def write_u64(self, gpa: int, value: int) -> None:
        self.write(gpa, value.to_bytes(8, "little"))

    def close(self) -> None:
        """Unmap guest RAM (later, when the last outstanding view of it goes)."""
        self._anchors.clear()
        for region in self.regions:
            with contextlib.suppress(BufferError):
                region.mapping.close()
        self.regions.clear()
