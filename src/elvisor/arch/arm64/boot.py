"""Loading what the guest boots: an arm64 Linux `Image` (Documentation/arch/arm64/booting.rst),
a gzip-compressed Image, an ELF file or a raw binary; and placing the device tree and initrd.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from elvisor.errors import UserError
from elvisor.memory import GuestMemory, GuestMemoryError, align_up

ARM64_IMAGE_MAGIC = 0x644D5241  # "ARM\x64", at offset 56 of the Image header
IMAGE_HEADER = struct.Struct(
    "<IIQQQQQQII"
)  # code0 code1 text_offset image_size flags res2-4 magic res5
KERNEL_ALIGN = 2 << 20
DEFAULT_TEXT_OFFSET = 0x80000  # for kernels whose header has image_size 0 (before 3.17)
DTB_MAX_SIZE = 2 << 20
GZIP_MAGIC = b"\x1f\x8b"
ELF_MAGIC = b"\x7fELF"
EM_AARCH64 = 183
PT_LOAD = 1
MAX_DECOMPRESSED = 256 << 20
RAW_LOAD_OFFSET = 0x8_0000  # a raw binary with no address: where a kernel Image would go


@dataclass(frozen=True)
class Loaded:
    """Where a boot image landed in guest memory."""

    entry: int
    start: int
    end: int  # first byte after everything the image owns (a kernel's BSS included)


@dataclass(frozen=True)
class ImageHeader:
    text_offset: int
    image_size: int
    flags: int

    @classmethod
    def parse(cls, data: bytes) -> ImageHeader | None:
        if len(data) < IMAGE_HEADER.size:
            return None
        fields = IMAGE_HEADER.unpack_from(data)
        if fields[8] != ARM64_IMAGE_MAGIC:
            return None
        text_offset, image_size, flags = fields[2], fields[3], fields[4]
        if image_size == 0:  # an old kernel: the protocol's defaults
            text_offset = DEFAULT_TEXT_OFFSET
        return cls(text_offset, image_size, flags)


def kind_of(data: bytes) -> str | None:
    """'image', 'gzip' (an Image inside, presumably), 'elf', or None."""
    if ImageHeader.parse(data):
        return "image"
    if data.startswith(GZIP_MAGIC):
        return "gzip"
    if data.startswith(ELF_MAGIC):
        return "elf"
    return None


def _gunzip(data: bytes, name: str) -> bytes:
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = inflater.decompress(data, MAX_DECOMPRESSED)
    except zlib.error as e:
        raise UserError(f"{name} is a corrupt gzip file: {e}") from None
    if inflater.unconsumed_tail:
        raise UserError(f"{name} decompresses to more than {MAX_DECOMPRESSED >> 20} MiB")
    return out


def _place(memory: GuestMemory, address: int, data: bytes, what: str, span: int = 0) -> None:
    """Write `data` at `address`, checking that `span` bytes (at least the data) fit in RAM."""
    try:
        memory.check_range(address, max(span, len(data)))
        memory.write(address, data)
    except GuestMemoryError:
        raise UserError(
            f"{what} ({max(span, len(data)) >> 10} KiB at {address:#x}) does not fit in guest "
            f"RAM: give the VM more memory (--memory)"
        ) from None


def load_kernel(memory: GuestMemory, data: bytes, name: str) -> Loaded:
    """An arm64 Linux Image (or a gzip-compressed one) at RAM base + text_offset."""
    if data.startswith(GZIP_MAGIC):
        data = _gunzip(data, name)
    header = ImageHeader.parse(data)
    if header is None:
        raise UserError(f"{name} is not an arm64 Linux Image (no ARM\\x64 magic in its header)")
    if header.flags & 1:
        raise UserError(f"{name} is a big-endian kernel; elvisor runs little-endian guests")
    ram_base = memory.regions[0].gpa
    load = align_up(ram_base, KERNEL_ALIGN) + header.text_offset
    span = max(header.image_size, len(data))
    _place(memory, load, data, f"the kernel {name}", span)
    return Loaded(entry=load, start=load, end=load + span)


def load_elf(memory: GuestMemory, data: bytes, name: str) -> Loaded:
    """A static AArch64 ELF executable: its PT_LOAD segments at their physical addresses."""
    if len(data) < 64 or data[4] != 2 or data[5] != 1:
        raise UserError(f"{name} is not a 64-bit little-endian ELF file")
    (e_machine,) = struct.unpack_from("<H", data, 18)
    if e_machine != EM_AARCH64:
        raise UserError(f"{name} is an ELF file for machine {e_machine}, not AArch64")
    (e_entry, e_phoff) = struct.unpack_from("<QQ", data, 24)
    (e_phentsize, e_phnum) = struct.unpack_from("<HH", data, 54)
    start, end = None, 0
    for i in range(e_phnum):
        base = e_phoff + i * e_phentsize
        if base + 56 > len(data):
            raise UserError(f"{name} is truncated: program header {i} is past its end")
        p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", data, base
        )
        if p_type != PT_LOAD or p_memsz == 0:
            continue
        if p_filesz > p_memsz or p_offset + p_filesz > len(data):
            raise UserError(f"{name}: segment {i} is larger than the file holds")
        segment = data[p_offset : p_offset + p_filesz] + bytes(p_memsz - p_filesz)
        _place(memory, p_paddr, segment, f"segment {i} of {name}")
        start = p_paddr if start is None else min(start, p_paddr)
        end = max(end, p_paddr + p_memsz)
    if start is None:
        raise UserError(f"{name} has no loadable segment")
    return Loaded(entry=e_entry, start=start, end=end)


def load_raw(memory: GuestMemory, data: bytes, address: int, name: str) -> Loaded:
    """A raw binary at `address`; execution starts at its first byte."""
    _place(memory, address, data, name)
    return Loaded(entry=address, start=address, end=address + len(data))


@dataclass(frozen=True)
class BootLayout:
    dtb: int
    initrd: int | None


def place_boot_blobs(
    memory: GuestMemory, kernel: Loaded, dtb_size: int, initrd_size: int | None
) -> BootLayout:
    """The device tree right after the kernel (2 MiB aligned), the initrd after it.

    Both stay low in RAM, inside the 32 GiB window around the kernel booting.rst asks for.
    """
    if dtb_size > DTB_MAX_SIZE:
        raise UserError(f"the device tree is {dtb_size} bytes; Linux accepts at most 2 MiB")
    dtb = align_up(kernel.end, KERNEL_ALIGN)
    initrd = None if initrd_size is None else align_up(dtb + DTB_MAX_SIZE, memory.page_size)
    end = dtb + DTB_MAX_SIZE if initrd is None else initrd + (initrd_size or 0)
    try:
        memory.check_range(dtb, end - dtb)
    except GuestMemoryError:
        ram = memory.size >> 20
        raise UserError(
            f"{ram} MiB of guest RAM is too small for the kernel, device tree and initrd "
            f"(they need {(end - memory.regions[0].gpa) >> 20} MiB): raise --memory"
        ) from None
    return BootLayout(dtb, initrd)
