"""Kernel modules for the lab: which files to take, in which order to load them.

A module's dependencies are read from the `depends=` entry of its `.modinfo` ELF section, so
no depmod run over the whole module tree is needed.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import struct
from pathlib import Path

from elvisor.debian.apt import extract
from elvisor.errors import UserError

SUFFIXES = (".ko", ".ko.xz", ".ko.gz")


def module_name(path: Path) -> str:
    name = path.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("-", "_")


def read_module(path: Path) -> bytes:
    """A module file's ELF image, decompressed (busybox insmod takes plain .ko files)."""
    if path.name.endswith(".xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    return path.read_bytes()


def modinfo(elf: bytes) -> dict[str, str]:
    """The key=value pairs of an ELF64 little-endian module's .modinfo section."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not an ELF64 little-endian object")
    (e_shoff,) = struct.unpack_from("<Q", elf, 0x28)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        base = e_shoff + index * e_shentsize
        (sh_name,) = struct.unpack_from("<I", elf, base)
        sh_offset, sh_size = struct.unpack_from("<QQ", elf, base + 0x18)
        return sh_name, sh_offset, sh_size

    _, str_off, _ = section(e_shstrndx)
    for index in range(e_shnum):
        sh_name, offset, size = section(index)
        name = elf[str_off + sh_name : elf.index(b"\0", str_off + sh_name)]
        if name == b".modinfo":
            pairs = elf[offset : offset + size].split(b"\0")
            info: dict[str, str] = {}
            for pair in pairs:
                key, sep, value = pair.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(key, value)
            return info
    return {}


class ModuleTree:
    """The modules of one kernel (/usr/lib/modules/VERSION)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = {
            module_name(p): p for p in (root / "kernel").rglob("*.ko*") if p.name.endswith(SUFFIXES)
        }
        builtin = root / "modules.builtin"
        names = builtin.read_text().split() if builtin.exists() else []
        self.builtin = {module_name(Path(n)) for n in names}

    def load_order(self, wanted: list[str]) -> list[tuple[str, bytes]]:
        """(name, image) of the wanted modules and their dependencies, dependencies first.

        Modules built into the kernel are left out: there is nothing to load.
        """
        order: list[tuple[str, bytes]] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            name = name.replace("-", "_")
            if name in seen or name in self.builtin:
                return
            seen.add(name)
            if name not in self.files:
                raise UserError(f"the kernel has no module {name} (in {self.root})")
            image = read_module(self.files[name])
            for dep in filter(None, modinfo(image).get("depends", "").split(",")):
                visit(dep)
            order.append((name, image))

        for name in wanted:
            visit(name)
        return order


def unpack_kernel(
    kernel_deb: Path, scratch: Path, image: Path, wanted: list[str]
) -> tuple[str, list[tuple[str, bytes]]]:
    """Unpack a Debian linux-image package: its kernel copied to `image`; returns the
    release and the wanted modules (with dependencies) in load order."""
    root = scratch / "kernel"
    extract(kernel_deb, root)
    module_dirs = [
        p
        for base in ("usr/lib/modules", "lib/modules")
        if (root / base).is_dir()
        for p in (root / base).iterdir()
    ]
    if len(module_dirs) != 1:
        raise UserError(f"{kernel_deb.name} does not hold exactly one kernel's modules")
    release = module_dirs[0].name
    shutil.copyfile(root / "boot" / f"vmlinuz-{release}", image)
    return release, ModuleTree(module_dirs[0]).load_order(wanted)
