"""Loading kernels, ELF and raw binaries; placing the device tree and initrd."""

import gzip
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from budget import peak_rss_growth

from elvisor.arch.arm64 import boot
from elvisor.errors import UserError
from elvisor.memory import GuestMemory

RAM = 0x4000_0000


def image(
    text_offset: int = 0, image_size: int = 3 << 20, flags: int = 0xA, body: bytes = b"KERNEL"
) -> bytes:
    """An arm64 Image header (booting.rst) followed by a recognisable body."""
    header = struct.pack(
        "<IIQQQQQQII", 0x14000010, 0, text_offset, image_size, flags, 0, 0, 0, 0x644D5241, 0
    )
    return header + body


@pytest.fixture
def memory():
    m = GuestMemory([(RAM, 64 << 20)])
    yield m
    m.close()


def test_image_loads_at_text_offset_and_owns_image_size(memory) -> None:
    loaded = boot.load_kernel(memory, image(text_offset=0x80000), "Image")
    assert loaded.entry == loaded.start == RAM + 0x80000
    assert loaded.end == RAM + 0x80000 + (3 << 20)  # BSS included
    assert memory.read(RAM + 0x80000 + 64, 6) == b"KERNEL"


def test_gzip_image(memory) -> None:
    loaded = boot.load_kernel(memory, gzip.compress(image()), "Image.gz")
    assert loaded.entry == RAM and memory.read(RAM + 64, 6) == b"KERNEL"


def test_old_image_without_size_uses_the_default_text_offset(memory) -> None:
    loaded = boot.load_kernel(memory, image(text_offset=0, image_size=0), "old")
    assert loaded.entry == RAM + 0x80000


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x7fELF" + bytes(100), "not an arm64 Linux Image"),
        (image(flags=1), "big-endian"),
        (b"\x1f\x8b" + b"junk", "corrupt gzip"),
    ],
)
def test_bad_kernels(memory, data: bytes, message: str) -> None:
    with pytest.raises(UserError, match=message):
        boot.load_kernel(memory, data, "k")


def test_kernel_larger_than_ram(memory) -> None:
    with pytest.raises(UserError, match="does not fit in guest RAM"):
        boot.load_kernel(memory, image(image_size=100 << 20), "huge")


def test_elf_from_the_cross_assembler(memory, tmp_path, cross_tool) -> None:
    src = tmp_path / "t.S"
    src.write_text(
        ".text\n.global _start\n_start: nop\nb _start\n.data\n.quad 0x1122334455667788\n"
    )
    obj, elf = tmp_path / "t.o", tmp_path / "t.elf"
    subprocess.run([cross_tool("as"), "-o", str(obj), str(src)], check=True)
    subprocess.run(
        [cross_tool("ld"), "-Ttext=0x40080000", "-Tdata=0x40090000", "-o", str(elf), str(obj)],
        check=True,
    )
    loaded = boot.load_elf(memory, elf.read_bytes(), "t.elf")
    assert loaded.entry == 0x4008_0000
    assert memory.read(0x4008_0000, 4) == bytes.fromhex("1f2003d5")  # nop
    assert memory.read_u64(0x4009_0000) == 0x1122334455667788


def test_elf_for_another_machine(memory) -> None:
    host_elf = Path(shutil.which("true") or "/bin/true").read_bytes()
    with pytest.raises(UserError, match="not AArch64"):
        boot.load_elf(memory, host_elf, "true")


def test_truncated_elf(memory) -> None:
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<H", header, 18, 183)
    struct.pack_into("<QQ", header, 24, RAM, 64)  # entry, program headers at 64...
    struct.pack_into("<HH", header, 54, 56, 3)  # ...three of them, past the end
    with pytest.raises(UserError, match="truncated"):
        boot.load_elf(memory, bytes(header), "cut.elf")


def test_raw_binary(memory) -> None:
    loaded = boot.load_raw(memory, b"\x00\x00\x00\x14", RAM + 0x1000, "raw")
    assert loaded.entry == RAM + 0x1000 and memory.read(RAM + 0x1000, 4) == b"\x00\x00\x00\x14"
    with pytest.raises(UserError, match="does not fit"):
        boot.load_raw(memory, b"x", 0x1000, "raw")


def test_device_tree_and_initrd_follow_the_kernel(memory) -> None:
    kernel = boot.load_kernel(memory, image(image_size=5 << 20), "Image")
    ram = boot.Ram(RAM, 64 << 20)
    where = boot.place_boot_blobs(ram, kernel, 4096, 1 << 20)
    assert where.dtb == RAM + (6 << 20)  # 2 MiB aligned, after the kernel's 5 MiB
    assert where.initrd == where.dtb + (2 << 20)
    with pytest.raises(UserError, match="too small for the kernel, device tree and initrd"):
        boot.place_boot_blobs(ram, kernel, 4096, 60 << 20)


def refused(work) -> tuple[str, int]:
    """(the UserError `work` raised, how much the host's peak memory grew meanwhile)."""

    def attempt() -> str:
        with pytest.raises(UserError) as e:
            work()
        return str(e.value)

    return peak_rss_growth(attempt)


def elf(segments: list[tuple[int, int, int, int]], entry: int = RAM) -> bytes:
    """An AArch64 ELF file with PT_LOAD segments (paddr, file offset, filesz, memsz)."""
    header = bytearray(64)
    header[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<HHIQQ", header, 16, 2, 183, 1, entry, 64)  # type, machine, entry, phoff
    struct.pack_into("<HHH", header, 52, 64, 56, len(segments))  # ehsize, phentsize, phnum
    table = b"".join(
        struct.pack("<IIQQQQQQ", 1, 7, off, addr, addr, filesz, memsz, 4096)
        for addr, off, filesz, memsz in segments
    )
    return bytes(header) + table + b"\xaa" * 4096


def test_truncated_gzip_kernel_is_refused(memory, tmp_path) -> None:
    whole = gzip.compress(image(body=bytes(range(256)) * 64))
    with pytest.raises(UserError, match="truncated gzip"):
        boot.load_kernel(memory, whole[: len(whole) // 2], "Image.gz")
    path = tmp_path / "Image.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match="truncated gzip"):
        boot.plan(boot.BootFiles(kernel=path), boot.Ram(RAM, 64 << 20))


def test_elf_with_a_huge_segment_is_refused_before_any_allocation(memory) -> None:
    crafted = elf([(RAM, 0x1000, 16, 1 << 40)])  # 1 TiB of BSS
    message, growth = refused(lambda: boot.load_elf(memory, crafted, "huge.elf"))
    assert "segment 0 of huge.elf (1073741824 KiB at 0x40000000) does not fit" in message
    assert growth < 1 << 20


def test_elf_segments_that_overlap_are_refused(memory) -> None:
    crafted = elf([(RAM, 0x1000, 16, 0x2000), (RAM + 0x1000, 0x1000, 16, 16)])
    with pytest.raises(UserError, match="segments 0 and 1 overlap"):
        boot.load_elf(memory, crafted, "overlap.elf")


def test_elf_bss_is_zeroed(memory) -> None:
    memory.write(RAM + 0x10, b"\xff" * 0x100)
    boot.load_elf(memory, elf([(RAM, 0x1000, 16, 0x110)]), "bss.elf")
    assert memory.read(RAM, 0x110) == b"\xaa" * 16 + bytes(0x100)


@pytest.mark.parametrize(
    ("header_fields", "message"),
    [
        ({52: (56, 1 << 15)}, "too many for a boot image"),  # 32 768 program headers
        ({52: (8, 1)}, "program headers of 8 bytes"),
    ],
)
def test_elf_with_crafted_program_headers(memory, header_fields, message) -> None:
    crafted = bytearray(elf([(RAM, 0x1000, 16, 16)]))
    for offset, (phentsize, phnum) in header_fields.items():
        struct.pack_into("<HH", crafted, offset + 2, phentsize, phnum)
    with pytest.raises(UserError, match=message):
        boot.load_elf(memory, bytes(crafted), "crafted.elf")


def test_plan_refuses_files_bigger_than_ram_without_reading_them(tmp_path) -> None:
    """A 4 GiB (sparse) kernel, initrd or binary for a 64 MiB guest: refused from its size."""
    ram = boot.Ram(RAM, 64 << 20)
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.write(image())
        f.truncate(4 << 30)
    small = tmp_path / "Image"
    small.write_bytes(image(image_size=1 << 20))
    for files, expected in [
        (boot.BootFiles(kernel=big), "the kernel"),
        (boot.BootFiles(binary=big), "does not fit in guest RAM"),
        (boot.BootFiles(kernel=small, initrd=big), "too small for the kernel, device tree"),
    ]:
        message, growth = refused(lambda f=files: boot.plan(f, ram))
        assert expected in message
        assert growth < 16 << 20


def test_load_guest_reads_no_more_than_ram_holds(tmp_path) -> None:
    big = tmp_path / "initrd"
    with big.open("wb") as f:
        f.truncate(4 << 30)
    small = tmp_path / "Image"
    small.write_bytes(image(image_size=1 << 20))
    memory = GuestMemory([(RAM, 64 << 20)])
    try:
        files = boot.BootFiles(kernel=small, initrd=big)
        message, growth = refused(lambda: boot.load_guest(memory, files))
        assert "bigger than the guest's 64 MiB of RAM" in message
        assert growth < 128 << 20
    finally:
        memory.close()


def test_plan_and_load_agree(tmp_path) -> None:
    kernel, initrd = tmp_path / "Image.gz", tmp_path / "initrd"
    kernel.write_bytes(gzip.compress(image(image_size=3 << 20)))
    initrd.write_bytes(b"initrd" * 1000)
    files = boot.BootFiles(kernel=kernel, initrd=initrd)
    planned = boot.plan(files, boot.Ram(RAM, 64 << 20))
    memory = GuestMemory([(RAM, 64 << 20)])
    try:
        loaded = boot.load_guest(memory, files)
    finally:
        memory.close()
    assert (planned.loaded, planned.layout) == (loaded.loaded, loaded.layout)
    # the kernel's 3 MiB, the device tree 2 MiB aligned after it, then its 2 MiB, the initrd
    assert planned.initrd_range == loaded.initrd_range == (RAM + (6 << 20), RAM + (6 << 20) + 6000)


def test_unreadable_kernel_is_one_line() -> None:
    with pytest.raises(UserError, match="cannot read kernel /proc/self/mem"):
        boot.plan(boot.BootFiles(kernel=Path("/proc/self/mem")), boot.Ram(RAM, 64 << 20))
