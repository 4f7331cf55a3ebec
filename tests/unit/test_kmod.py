"""Module dependencies read from .modinfo, and the load order built from them."""

import lzma

import pytest

from elvisor.debian.kmod import ModuleTree, modinfo
from elvisor.errors import UserError


def module_source(name: str, depends: str) -> str:
    return (
        '.section .modinfo,"a"\n'
        f'.asciz "license=GPL"\n.asciz "depends={depends}"\n.asciz "name={name}"\n'
        ".text\nret\n"
    )


def test_modinfo_of_a_real_elf_object(assemble) -> None:
    info = modinfo(assemble(module_source("9p", "netfs,9pnet")))
    assert info == {"license": "GPL", "depends": "netfs,9pnet", "name": "9p"}


def test_not_elf() -> None:
    with pytest.raises(ValueError, match="not an ELF64"):
        modinfo(b"\x7fELF\x01\x01" + bytes(64))


def test_load_order_dependencies_first(tmp_path, assemble) -> None:
    root = tmp_path / "6.12-arm64"
    (root / "kernel/fs").mkdir(parents=True)
    modules = {  # name: depends
        "9p": "netfs,9pnet",
        "9pnet_virtio": "9pnet,virtio_ring",
        "9pnet": "",
        "netfs": "",
    }
    for name, depends in modules.items():
        elf = assemble(module_source(name, depends))
        if name == "netfs":  # Debian compresses its modules with xz
            (root / "kernel/fs/netfs.ko.xz").write_bytes(lzma.compress(elf))
        else:
            (root / f"kernel/fs/{name.replace('_', '-')}.ko").write_bytes(elf)
    (root / "modules.builtin").write_text("kernel/drivers/virtio/virtio_ring.ko\n")

    order = ModuleTree(root).load_order(["9pnet_virtio", "9p"])
    names = [name for name, _ in order]
    assert names == ["9pnet", "9pnet_virtio", "netfs", "9p"]  # virtio_ring is built in
    assert all(image.startswith(b"\x7fELF") for _, image in order)  # decompressed

    with pytest.raises(UserError, match="no module vhost_net"):
        ModuleTree(root).load_order(["vhost_net"])
