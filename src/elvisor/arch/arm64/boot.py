"""Loading what the guest boots: an arm64 Linux `Image` (Documentation/arch/arm64/booting.rst),
a gzip-compressed Image, an ELF file or a raw binary; and placing the device tree and initrd.

`plan()` says where everything goes from the files' headers and sizes alone, with every check
the loaders make, so that a file that cannot boot is refused before any VM exists (and before
a large file is read). `load_guest()` then loads, checking again (a file may have changed), and
never reads more of a file than the guest's RAM could hold.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from elvisor.errors import UserError
from elvisor.files import Read, read_file, reader, size_of
from elvisor.memory import GuestMemory, align_up

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
ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr
PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr
MAX_PROGRAM_HEADERS = 64 << 10  # bytes of program headers read (real files have a few)
MAX_DECOMPRESSED = 256 << 20
INFLATE_CHUNK = 1 << 20
RAW_LOAD_OFFSET = 0x8_0000  # a raw binary with no address: where a kernel Image would go


@dataclass(frozen=True)
class Ram:
    """A guest's RAM: one stretch of guest physical addresses."""

    base: int
    size: int

    @property
    def end(self) -> int:
        return self.base + self.size

    def holds(self, start: int, length: int) -> bool:
        return self.base <= start and start + length <= self.end


@dataclass(frozen=True)
class Loaded:
    """Where a boot image lands in guest memory."""

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


def _too_big(what: str, start: int, length: int, ram: Ram) -> UserError:
    return UserError(
        f"{what} ({length >> 10} KiB at {start:#x}) does not fit in guest RAM "
        f"({ram.size >> 20} MiB at {ram.base:#x}): give the VM more memory (--memory)"
    )


# --- arm64 Linux Images ----------------------------------------------------------------------


def _kernel(header: ImageHeader | None, length: int, ram: Ram, name: str) -> Loaded:
    """Where an Image of `length` bytes goes: RAM base (2 MiB aligned) + text_offset, owning
    image_size bytes (its BSS too)."""
    if header is None:
        raise UserError(f"{name} is not an arm64 Linux Image (no ARM\\x64 magic in its header)")
    if header.flags & 1:
        raise UserError(f"{name} is a big-endian kernel; elvisor runs little-endian guests")
    load = align_up(ram.base, KERNEL_ALIGN) + header.text_offset
    span = max(header.image_size, length)
    if not ram.holds(load, span):
        raise _too_big(f"the kernel {name}", load, span, ram)
    return Loaded(entry=load, start=load, end=load + span)


class _Inflater:
    """gzip data in, what it inflates to out, bounded by MAX_DECOMPRESSED; `end()` checks
    that the stream was whole."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._total = 0

    def feed(self, data: bytes) -> bytes:
        try:
            out = self._inflater.decompress(data, MAX_DECOMPRESSED - self._total + 1)
        except zlib.error as e:
            raise UserError(f"{self.name} is a corrupt gzip file: {e}") from None
        self._total += len(out)
        if self._total > MAX_DECOMPRESSED or self._inflater.unconsumed_tail:
            raise UserError(f"{self.name} decompresses to more than {MAX_DECOMPRESSED >> 20} MiB")
        return out

    def end(self) -> None:
        if not self._inflater.eof:
            raise UserError(f"{self.name} is a truncated gzip file: its end is missing")


def gunzip(data: bytes, name: str) -> bytes:
    inflater = _Inflater(name)
    out = inflater.feed(data)
    inflater.end()
    return out


def load_kernel(memory: GuestMemory, data: bytes, name: str) -> Loaded:
    """An arm64 Linux Image (or a gzip-compressed one) at RAM base + text_offset."""
    if data.startswith(GZIP_MAGIC):
        data = gunzip(data, name)
    loaded = _kernel(ImageHeader.parse(data), len(data), _ram(memory), name)
    memory.write(loaded.start, data)
    return loaded


# --- ELF files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    index: int
    offset: int  # in the file
    address: int  # physical, in the guest
    file_size: int
    memory_size: int


def _elf(read: Read, size: int, ram: Ram, name: str) -> tuple[int, list[Segment]]:
    """(entry, loadable segments) of a static AArch64 ELF file, each checked: inside the
    file, inside RAM, not overlapping another."""
    header = read(0, ELF_HEADER.size)
    if len(header) < ELF_HEADER.size or header[4] != 2 or header[5] != 1:
        raise UserError(f"{name} is not a 64-bit little-endian ELF file")
    fields = ELF_HEADER.unpack(header)
    e_machine, e_entry, e_phoff, e_phentsize, e_phnum = (
        fields[2], fields[4], fields[5], fields[9], fields[10],
    )  # fmt: skip
    if e_machine != EM_AARCH64:
        raise UserError(f"{name} is an ELF file for machine {e_machine}, not AArch64")
    if e_phnum and e_phentsize < PROGRAM_HEADER.size:
        raise UserError(f"{name}: program headers of {e_phentsize} bytes (ELF64's are 56)")
    table_size = e_phentsize * e_phnum
    if table_size > MAX_PROGRAM_HEADERS:
        raise UserError(f"{name} has {e_phnum} program headers: too many for a boot image")
    if e_phoff + table_size > size:
        raise UserError(f"{name} is truncated: its program headers are past its end")
    table = read(e_phoff, table_size)
    segments = []
    for i in range(e_phnum):
        p_type, _, p_offset, _, p_paddr, p_filesz, p_memsz, _ = PROGRAM_HEADER.unpack_from(
            table, i * e_phentsize
        )
        if p_type != PT_LOAD or p_memsz == 0:
            continue
        if p_filesz > p_memsz or p_offset + p_filesz > size:
            raise UserError(f"{name}: segment {i} is larger than the file holds")
        if not ram.holds(p_paddr, p_memsz):
            raise _too_big(f"segment {i} of {name}", p_paddr, p_memsz, ram)
        segments.append(Segment(i, p_offset, p_paddr, p_filesz, p_memsz))
    if not segments:
        raise UserError(f"{name} has no loadable segment")
    ordered = sorted(segments, key=lambda s: s.address)
    for a, b in itertools.pairwise(ordered):
        if a.address + a.memory_size > b.address:
            raise UserError(f"{name}: segments {a.index} and {b.index} overlap in memory")
    return e_entry, segments


def _elf_loaded(entry: int, segments: list[Segment]) -> Loaded:
    start = min(s.address for s in segments)
    end = max(s.address + s.memory_size for s in segments)
    return Loaded(entry=entry, start=start, end=end)


def load_elf(memory: GuestMemory, data: bytes, name: str) -> Loaded:
    """A static AArch64 ELF executable: its PT_LOAD segments at their physical addresses,
    zero-filled beyond what the file holds."""
    entry, segments = _elf(lambda o, n: data[o : o + n], len(data), _ram(memory), name)
    view = memoryview(data)
    for s in segments:
        memory.write(s.address, view[s.offset : s.offset + s.file_size])
        memory.zero(s.address + s.file_size, s.memory_size - s.file_size)
    return _elf_loaded(entry, segments)


# --- raw binaries ------------------------------------------------------------------------------


def _raw(address: int, length: int, ram: Ram, name: str) -> Loaded:
    if not ram.holds(address, length):
        raise _too_big(name, address, length, ram)
    return Loaded(entry=address, start=address, end=address + length)


def load_raw(memory: GuestMemory, data: bytes, address: int, name: str) -> Loaded:
    """A raw binary at `address`; execution starts at its first byte."""
    loaded = _raw(address, len(data), _ram(memory), name)
    memory.write(address, data)
    return loaded


# --- the device tree and the initrd ------------------------------------------------------------


@dataclass(frozen=True)
class BootLayout:
    dtb: int
    initrd: int | None


def place_boot_blobs(
    ram: Ram, kernel: Loaded, dtb_size: int, initrd_size: int | None
) -> BootLayout:
    """The device tree right after the kernel (2 MiB aligned), the initrd after it.

    Both stay low in RAM, inside the 32 GiB window around the kernel booting.rst asks for.
    """
    if dtb_size > DTB_MAX_SIZE:
        raise UserError(f"the device tree is {dtb_size} bytes; Linux accepts at most 2 MiB")
    dtb = align_up(kernel.end, KERNEL_ALIGN)
    initrd = None if initrd_size is None else align_up(dtb + DTB_MAX_SIZE, 4096)
    end = dtb + DTB_MAX_SIZE if initrd is None else initrd + (initrd_size or 0)
    if not ram.holds(dtb, end - dtb):
        raise UserError(
            f"{ram.size >> 20} MiB of guest RAM is too small for the kernel, device tree and "
            f"initrd (they need {(end - ram.base) >> 20} MiB): raise --memory"
        )
    return BootLayout(dtb, initrd)


# --- a whole guest: planned from its files, then loaded ----------------------------------------


@dataclass(frozen=True)
class BootFiles:
    """What a guest boots: a kernel (Image, gzip Image or ELF) or a bare-metal binary (ELF,
    or raw: at `load_addr`, by default 512 KiB into RAM), and an initrd."""

    kernel: Path | None = None
    binary: Path | None = None
    load_addr: int | None = None
    initrd: Path | None = None

    @property
    def image(self) -> tuple[Path, str]:
        if self.kernel is not None:
            return self.kernel, "kernel"
        assert self.binary is not None
        return self.binary, "binary"


@dataclass(frozen=True)
class Guest:
    """A guest as loaded (or as it would be): its image, device tree and initrd."""

    loaded: Loaded
    layout: BootLayout
    initrd_size: int | None
    initrd: bytes | None = None  # (when loaded)

    @property
    def initrd_range(self) -> tuple[int, int] | None:
        if self.layout.initrd is None or self.initrd_size is None:
            return None
        return self.layout.initrd, self.layout.initrd + self.initrd_size


def plan(files: BootFiles, ram: Ram) -> Guest:
    """Where the guest would go, from its files' headers and sizes, checked as `load_guest`
    checks (a gzip kernel is inflated, and what it inflates to is thrown away)."""
    path, what = files.image
    name = str(path)
    size = size_of(path, what)
    with reader(path, what) as read:
        head = read(0, IMAGE_HEADER.size)
        kind = kind_of(head)
        if kind == "elf":
            loaded = _elf_loaded(*_elf(read, size, ram, name))
        elif files.kernel is None:
            loaded = _raw(_raw_address(files, ram), size, ram, name)
        elif kind is None:
            raise UserError(
                f"kernel {path} is neither an arm64 Linux Image (plain or gzip) nor an ELF file"
            )
        else:
            if kind == "gzip":
                head, size = _inflated(read, name)
            loaded = _kernel(ImageHeader.parse(head), size, ram, name)
    initrd_size = None if files.initrd is None else size_of(files.initrd, "initrd")
    return Guest(loaded, place_boot_blobs(ram, loaded, 0, initrd_size), initrd_size)


def load_guest(memory: GuestMemory, files: BootFiles) -> Guest:
    """Load the guest's image into `memory` and read its initrd (the caller puts the device
    tree and the initrd where `Guest.layout` says). No file is read beyond the size of RAM."""
    ram = _ram(memory)
    path, what = files.image
    data = read_file(path, what, limit=ram.size)
    name = str(path)
    if kind_of(data) == "elf":
        loaded = load_elf(memory, data, name)
    elif files.kernel is not None:
        loaded = load_kernel(memory, data, name)
    else:
        loaded = load_raw(memory, data, _raw_address(files, ram), name)
    initrd = None if files.initrd is None else read_file(files.initrd, "initrd", limit=ram.size)
    initrd_size = None if initrd is None else len(initrd)
    layout = place_boot_blobs(ram, loaded, 0, initrd_size)
    if initrd is not None and layout.initrd is not None:
        memory.write(layout.initrd, initrd)
    return Guest(loaded, layout, initrd_size, initrd)


def _raw_address(files: BootFiles, ram: Ram) -> int:
    return ram.base + RAW_LOAD_OFFSET if files.load_addr is None else files.load_addr


def _ram(memory: GuestMemory) -> Ram:
    (region,) = memory.regions  # (a guest's RAM is one region)
    return Ram(region.gpa, region.size)


def _inflated(read: Read, name: str) -> tuple[bytes, int]:
    """(the first bytes, the size) of what a gzip file inflates to, a chunk at a time."""
    inflater = _Inflater(name)
    head = b""
    offset = size = 0
    while chunk := read(offset, INFLATE_CHUNK):
        offset += len(chunk)
        out = inflater.feed(chunk)
        head += out[: max(0, IMAGE_HEADER.size - len(head))]
        size += len(out)
    inflater.end()
    return head, size
