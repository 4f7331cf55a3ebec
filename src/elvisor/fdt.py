"""A writer for flattened device trees (the DTB format of the Devicetree Specification, ch. 5).

    header (40 bytes) | memory reservation block | structure block | strings block

Nodes are opened and closed in order; properties are typed (u32 cells, u64, strings).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE = 0x1
FDT_END_NODE = 0x2
FDT_PROP = 0x3
FDT_END = 0x9
FDT_VERSION = 17
FDT_LAST_COMP_VERSION = 16
HEADER_SIZE = 40

_NODE_NAME = re.compile(r"[A-Za-z0-9,._+-]{1,31}(@[A-Za-z0-9,._+-]+)?")
_PROP_NAME = re.compile(r"[A-Za-z0-9,._+?#-]{1,31}")


class FdtError(ValueError):
    pass


def _pad4(data: bytearray) -> None:
    data.extend(b"\0" * (-len(data) % 4))


class FdtWriter:
    def __init__(self) -> None:
        self._struct = bytearray()
        self._strings = bytearray()
        self._string_offsets: dict[str, int] = {}
        self._open: list[set[str]] = []  # property names of each open node
        self._next_phandle = 1

    # --- nodes -------------------------------------------------------------------------------

    def begin_node(self, name: str) -> None:
        if self._open and not _NODE_NAME.fullmatch(name):
            raise FdtError(f"bad node name {name!r}")
        if not self._open and (name or self._struct):
            raise FdtError("the first node is the root, named ''")
        self._struct += struct.pack(">I", FDT_BEGIN_NODE) + name.encode() + b"\0"
        _pad4(self._struct)
        self._open.append(set())

    def end_node(self) -> None:
        if not self._open:
            raise FdtError("end_node without begin_node")
        self._open.pop()
        self._struct += struct.pack(">I", FDT_END_NODE)

    @contextmanager
    def node(self, name: str) -> Iterator[None]:
        self.begin_node(name)
        yield
        self.end_node()

    def alloc_phandle(self) -> int:
        phandle = self._next_phandle
        self._next_phandle += 1
        return phandle

    # --- properties --------------------------------------------------------------------------

    def property(self, name: str, value: bytes) -> None:
        if not self._open:
            raise FdtError(f"property {name!r} outside a node")
        if not _PROP_NAME.fullmatch(name):
            raise FdtError(f"bad property name {name!r}")
        if name in self._open[-1]:
            raise FdtError(f"property {name!r} set twice")
        self._open[-1].add(name)
        self._struct += struct.pack(">III", FDT_PROP, len(value), self._string_offset(name))
        self._struct += value
        _pad4(self._struct)

    def property_empty(self, name: str) -> None:
        self.property(name, b"")

    def property_u32(self, name: str, value: int) -> None:
        self.property(name, struct.pack(">I", value))

    def property_u64(self, name: str, value: int) -> None:
        self.property(name, struct.pack(">Q", value))

    def property_cells(self, name: str, cells: list[int]) -> None:
        self.property(name, struct.pack(f">{len(cells)}I", *cells))

    def property_string(self, name: str, value: str) -> None:
        self.property_strings(name, [value])

    def property_strings(self, name: str, values: list[str]) -> None:
        if any("\0" in v for v in values):
            raise FdtError(f"property {name!r}: strings cannot hold NUL")
        self.property(name, b"".join(v.encode() + b"\0" for v in values))

    def _string_offset(self, name: str) -> int:
        if name not in self._string_offsets:
            self._string_offsets[name] = len(self._strings)
            self._strings += name.encode() + b"\0"
        return self._string_offsets[name]

    # --- the blob ----------------------------------------------------------------------------

    def finish(self, boot_cpuid_phys: int = 0, reserved: tuple[tuple[int, int], ...] = ()) -> bytes:
        if self._open:
            raise FdtError(f"{len(self._open)} node(s) left open")
        if not self._struct:
            raise FdtError("empty device tree")
        rsvmap = b"".join(struct.pack(">QQ", a, s) for a, s in [*reserved, (0, 0)])
        structure = bytes(self._struct) + struct.pack(">I", FDT_END)
        off_rsvmap = HEADER_SIZE  # 8-byte aligned
        off_struct = off_rsvmap + len(rsvmap)
        off_strings = off_struct + len(structure)
        total = off_strings + len(self._strings)
        header = struct.pack(
            ">10I",
            FDT_MAGIC,
            total,
            off_struct,
            off_strings,
            off_rsvmap,
            FDT_VERSION,
            FDT_LAST_COMP_VERSION,
            boot_cpuid_phys,
            len(self._strings),
            len(structure),
        )
        return header + rsvmap + structure + bytes(self._strings)
