"""The configuration the EL2 hypervisor reads after its own image (baremetal/include/config.h,
the same layout: a unit test compiles that header and compares), and packing the image.

    [hypervisor, padded to its image_size][config][payloads, each page-aligned]
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

CONFIG_MAGIC = 0x314746435356454C  # "LEVSCFG1", little-endian
MAX_VMS = 4
MAX_PAYLOADS = 4
VM_NAME_SIZE = 16
PAGE = 4096
IMAGE_HEADER = struct.Struct("<IIQQQQQQ4sI")  # the arm64 Image header the hypervisor starts with
IMAGE_MAGIC = b"ARM\x64"

PAYLOAD = struct.Struct("<QQQ")  # offset (from the config's start), size, address in the VM
VM = struct.Struct(f"<{VM_NAME_SIZE}sQQQQII{PAYLOAD.size * MAX_PAYLOADS}s")
CONFIG = struct.Struct(f"<QQ{VM.size * MAX_VMS}s")


@dataclass(frozen=True)
class VmImage:
    """One VM as the hypervisor sees it: its RAM (the same addresses to the VM and the
    machine), its CPUs, where it starts, and what goes into its RAM first."""

    name: str
    ram_base: int
    ram_size: int
    entry: int
    dtb: int
    first_cpu: int
    cpus: int
    payloads: list[tuple[int, bytes]] = field(default_factory=list)  # (address, data)


def image_size(hypervisor: bytes) -> int:
    """The hypervisor's size in memory (BSS and stacks included), from its Image header."""
    fields = IMAGE_HEADER.unpack_from(hypervisor)
    if fields[8] != IMAGE_MAGIC:
        raise ValueError("the hypervisor binary does not start with an arm64 Image header")
    return fields[3]


def pack(hypervisor: bytes, vms: list[VmImage]) -> bytes:
    """The bootable image: the hypervisor, then its configuration and the VMs' payloads."""
    if not 0 < len(vms) <= MAX_VMS:
        raise ValueError(f"1 to {MAX_VMS} VMs, not {len(vms)}")
    blobs = bytearray()
    offset = _align(CONFIG.size)
    packed_vms = b""
    for vm in vms:
        if len(vm.payloads) > MAX_PAYLOADS:
            raise ValueError(f"VM {vm.name}: at most {MAX_PAYLOADS} payloads")
        name = vm.name.encode()
        if not 0 < len(name) < VM_NAME_SIZE:
            raise ValueError(f"VM name {vm.name!r}: 1 to {VM_NAME_SIZE - 1} bytes")
        payloads = b""
        for address, data in vm.payloads:
            payloads += PAYLOAD.pack(offset + len(blobs), len(data), address)
            blobs += data + bytes(_align(len(data)) - len(data))
        packed_vms += VM.pack(name, vm.ram_base, vm.ram_size, vm.entry, vm.dtb, vm.first_cpu,
                              vm.cpus, payloads)  # fmt: skip
    config = CONFIG.pack(CONFIG_MAGIC, offset + len(blobs), packed_vms)
    head = hypervisor.ljust(image_size(hypervisor), b"\0")
    return head + config.ljust(offset, b"\0") + bytes(blobs)


def _align(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE
