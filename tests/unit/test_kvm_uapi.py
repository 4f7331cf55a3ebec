"""ioctl numbers, constants and structure layouts, checked against the arm64 kernel headers.

The values are computed by the aarch64 cross compiler from linux/kvm.h and asm/kvm.h
(Debian's linux-libc-dev for arm64), never taken from the code under test.
"""

import ctypes
import struct
import subprocess
from pathlib import Path

import pytest

from elvisor.devices import tap, vhost
from elvisor.kvm import uapi
from elvisor.kvm.fds import reg_size

ENUMS = [
    uapi.Ioctl,
    uapi.Cap,
    uapi.ExitReason,
    uapi.SystemEvent,
    uapi.DeviceType,
    uapi.VcpuFeature,
    uapi.MemFlag,
    uapi.MpState,
]
STRUCTS = [
    "kvm_userspace_memory_region",
    "kvm_vcpu_init",
    "kvm_one_reg",
    "kvm_create_device",
    "kvm_device_attr",
    "kvm_irq_level",
    "kvm_irqfd",
    "kvm_ioeventfd",
    "kvm_enable_cap",
    "kvm_mp_state",
    "kvm_reg_list",
    "kvm_guest_debug",
    "kvm_run",
]
KVM_RUN_FIELDS = [
    "exit_reason",
    "immediate_exit",
    "mmio",
    "hypercall",
    "system_event",
    "internal",
    "fail_entry",
    "debug",
    "arm_nisv",
    "kvm_valid_regs",
    "s",
]


def expressions() -> list[tuple[str, str, int]]:
    """(what, C expression, our value) for everything checked."""
    rows = [(f"{e.__name__}.{m.name}", m.name, int(m)) for e in ENUMS for m in e]
    rows += [
        ("KVMIO", "KVMIO", uapi.KVMIO),
        ("KVM_API_VERSION", "KVM_API_VERSION", 12),
        ("KVM_CREATE_DEVICE_TEST", "KVM_CREATE_DEVICE_TEST", uapi.KVM_CREATE_DEVICE_TEST),
        ("KVM_ARM_VM_SMCCC_CTRL", "KVM_ARM_VM_SMCCC_CTRL", uapi.KVM_ARM_VM_SMCCC_CTRL),
        *(
            (name, name, getattr(uapi, name))
            for name in (
                "KVM_IRQFD_FLAG_DEASSIGN",
                "KVM_IRQFD_FLAG_RESAMPLE",
                "KVM_IOEVENTFD_FLAG_DATAMATCH",
                "KVM_IOEVENTFD_FLAG_DEASSIGN",
                "KVM_GUESTDBG_ENABLE",
                "KVM_GUESTDBG_SINGLESTEP",
                "KVM_GUESTDBG_USE_SW_BP",
                "KVM_GUESTDBG_USE_HW",
                "KVM_ARM_MAX_DBG_REGS",
            )
        ),
        ("KVM_ARM_VM_SMCCC_FILTER", "KVM_ARM_VM_SMCCC_FILTER", uapi.KVM_ARM_VM_SMCCC_FILTER),
        (
            "KVM_VM_TYPE_ARM_IPA_SIZE(48)",
            "KVM_VM_TYPE_ARM_IPA_SIZE(48)",
            uapi.KVM_VM_TYPE_ARM_IPA_SIZE(48),
        ),
    ]
    rows += [
        (f"sizeof {s}", f"sizeof(struct {s})", ctypes.sizeof(getattr(uapi, s))) for s in STRUCTS
    ]
    rows += [(m.name, m.name, int(m)) for m in vhost.VhostIoctl]
    rows += [
        (f"sizeof {name}", f"sizeof(struct {name})", ours.size)
        for name, ours in (
            ("vhost_vring_state", vhost.VRING_STATE),
            ("vhost_vring_file", vhost.VRING_FILE),
            ("vhost_vring_addr", vhost.VRING_ADDR),
            ("vhost_memory", vhost.MEMORY),
            ("vhost_memory_region", vhost.MEMORY_REGION),
        )
    ]
    rows += [
        (name, name, getattr(tap, name))
        for name in ("TUNSETIFF", "TUNGETFEATURES", "TUNSETOFFLOAD", "TUNSETVNETHDRSZ", "IFF_TAP",
                     "IFF_NO_PI", "IFF_VNET_HDR", "TUN_F_CSUM", "TUN_F_TSO4", "TUN_F_TSO6",
                     "TUN_F_TSO_ECN")
    ]  # fmt: skip
    for field in KVM_RUN_FIELDS:
        ours = (
            uapi.kvm_run.exit.offset
            if field in uapi._kvm_run_exit.__dict__
            else getattr(uapi.kvm_run, field).offset
        )
        rows.append(
            (f"offsetof kvm_run.{field}", f"__builtin_offsetof(struct kvm_run, {field})", ours)
        )
    return rows


@pytest.fixture(scope="module")
def header_values(arm64_kernel_headers: Path, cross_tool, tmp_path_factory) -> list[int]:
    rows = expressions()
    work = tmp_path_factory.mktemp("uapi")
    source = work / "values.c"
    source.write_text(
        "#include <linux/kvm.h>\n#include <linux/vhost.h>\n#include <linux/if_tun.h>\n"
        "const unsigned long long values[] = {\n"
        + "".join(f"  (unsigned long long)({expr}),\n" for _, expr, _ in rows)
        + "};\n"
    )
    obj, raw = work / "values.o", work / "values.bin"
    include = arm64_kernel_headers
    compiler_headers = subprocess.run(  # its own stdint.h (virtio_ring.h wants one)
        [cross_tool("gcc"), "-print-file-name=include"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(
        [
            cross_tool("gcc"),
            "-c",
            "-nostdinc",
            "-ffreestanding",
            "-isystem",
            compiler_headers,
            "-I",
            str(include),
            "-I",
            str(include / "aarch64-linux-gnu"),
            "-o",
            str(obj),
            str(source),
        ],
        check=True,
    )
    subprocess.run(
        [cross_tool("objcopy"), "-O", "binary", "-j", ".rodata", str(obj), str(raw)], check=True
    )
    data = raw.read_bytes()
    return list(struct.unpack(f"<{len(rows)}Q", data[: 8 * len(rows)]))


def test_everything_matches_the_arm64_headers(header_values: list[int]) -> None:
    mismatches = [
        f"{what}: ours {ours:#x}, kernel {theirs:#x}"
        for (what, _, ours), theirs in zip(expressions(), header_values, strict=True)
        if ours != theirs
    ]
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize(
    ("name", "number"),
    [  # literal values, as printed by the kernel's own definitions on arm64
        ("KVM_GET_API_VERSION", 0xAE00),
        ("KVM_CREATE_VM", 0xAE01),
        ("KVM_RUN", 0xAE80),
        ("KVM_SET_USER_MEMORY_REGION", 0x4020AE46),
        ("KVM_ARM_VCPU_INIT", 0x4020AEAE),
        ("KVM_ARM_PREFERRED_TARGET", 0x8020AEAF),
        ("KVM_SET_ONE_REG", 0x4010AEAC),
        ("KVM_CREATE_DEVICE", 0xC00CAEE0),
    ],
)
def test_well_known_ioctl_numbers(name: str, number: int) -> None:
    assert uapi.Ioctl[name] == number


def test_register_size_from_id() -> None:
    assert reg_size(0x6030_0000_0010_0040) == 8  # PC: KVM_REG_SIZE_U64
    assert reg_size(0x6040_0000_0010_0054) == 16  # V0: KVM_REG_SIZE_U128
    assert reg_size(0x6020_0000_0010_0000) == 4  # KVM_REG_SIZE_U32
