"""The configuration the Python side packs for the EL2 hypervisor has the layout its C header
declares: offsets and sizes computed by the aarch64 compiler from baremetal/include/config.h."""

import struct
import subprocess
from pathlib import Path

from elvisor.baremetal import config

HEADER = Path(__file__).resolve().parents[2] / "baremetal" / "include"
FIELDS = [  # (C expression, our value): offsets and sizes, and constants
    ("sizeof(struct payload)", config.PAYLOAD.size),
    ("sizeof(struct vm_config)", config.VM.size),
    ("sizeof(struct config)", config.CONFIG.size),
    ("__builtin_offsetof(struct vm_config, ram_base)", 16),
    ("__builtin_offsetof(struct vm_config, entry)", 32),
    ("__builtin_offsetof(struct vm_config, dtb)", 40),
    ("__builtin_offsetof(struct vm_config, first_cpu)", 48),
    ("__builtin_offsetof(struct vm_config, cpus)", 52),
    ("__builtin_offsetof(struct vm_config, payloads)", 56),
    ("__builtin_offsetof(struct config, vms)", 16),
    ("CONFIG_MAGIC", config.CONFIG_MAGIC),
    ("MAX_VMS", config.MAX_VMS),
    ("MAX_PAYLOADS", config.MAX_PAYLOADS),
    ("VM_NAME_SIZE", config.VM_NAME_SIZE),
]


def test_layout_matches_the_c_header(cross_tool, tmp_path) -> None:
    source = tmp_path / "values.c"
    source.write_text(
        '#include "config.h"\nconst unsigned long long values[] = {\n'
        + "".join(f"  (unsigned long long)({expr}),\n" for expr, _ in FIELDS)
        + "};\n"
    )
    compiler_headers = subprocess.run(
        [cross_tool("gcc"), "-print-file-name=include"], capture_output=True, text=True, check=True
    ).stdout.strip()
    obj, raw = tmp_path / "values.o", tmp_path / "values.bin"
    subprocess.run([cross_tool("gcc"), "-c", "-nostdinc", "-ffreestanding", "-isystem",
                    compiler_headers, "-I", str(HEADER), "-o", str(obj), str(source)],
                   check=True)  # fmt: skip
    subprocess.run(
        [cross_tool("objcopy"), "-O", "binary", "-j", ".rodata", str(obj), str(raw)], check=True
    )
    theirs = struct.unpack(f"<{len(FIELDS)}Q", raw.read_bytes()[: 8 * len(FIELDS)])
    mismatches = [
        f"{expr}: ours {ours:#x}, C {c:#x}"
        for (expr, ours), c in zip(FIELDS, theirs, strict=True)
        if ours != c
    ]
    assert not mismatches, "\n".join(mismatches)


def test_packed_image_puts_the_configuration_at_image_size() -> None:
    header = struct.pack("<IIQQQQQQ4sI", 0x14000010, 0, 0x80000, 0x3000, 2, 0, 0, 0, b"ARM\x64", 0)
    hypervisor = header + b"\x01" * 100
    vm = config.VmImage("vm0", 0x4800_0000, 64 << 20, 0x4808_0000, 0x4820_0000, 1, 2,
                        [(0x4808_0000, b"kernel"), (0x4820_0000, b"dtb")])  # fmt: skip
    image = config.pack(hypervisor, [vm])
    assert image[: len(hypervisor)] == hypervisor
    assert image[len(hypervisor) : 0x3000] == bytes(0x3000 - len(hypervisor))  # BSS: zeros
    magic, size, vms = config.CONFIG.unpack_from(image, 0x3000)
    assert magic == config.CONFIG_MAGIC
    assert len(image) == 0x3000 + size
    name, base, ram, entry, dtb, first, cpus, payloads = config.VM.unpack_from(vms)
    assert (name.rstrip(b"\0"), base, ram, entry, dtb, first, cpus) == (
        b"vm0", 0x4800_0000, 64 << 20, 0x4808_0000, 0x4820_0000, 1, 2)  # fmt: skip
    offset, length, address = config.PAYLOAD.unpack_from(payloads)
    assert image[0x3000 + offset : 0x3000 + offset + length] == b"kernel"
    assert address == 0x4808_0000
    offset, length, address = config.PAYLOAD.unpack_from(payloads, config.PAYLOAD.size)
    assert image[0x3000 + offset : 0x3000 + offset + length] == b"dtb"
    assert offset % 4096 == 0
    assert config.VM.unpack_from(vms, config.VM.size)[2] == 0  # the other slots: unused
