"""Loading kernels, ELF and raw binaries; placing the device tree and initrd."""

import gzip
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

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
    where = boot.place_boot_blobs(memory, kernel, 4096, 1 << 20)
    assert where.dtb == RAM + (6 << 20)  # 2 MiB aligned, after the kernel's 5 MiB
    assert where.initrd == where.dtb + (2 << 20)
    with pytest.raises(UserError, match="too small for the kernel, device tree and initrd"):
        boot.place_boot_blobs(memory, kernel, 4096, 60 << 20)
