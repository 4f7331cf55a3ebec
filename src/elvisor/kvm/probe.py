"""What this host's KVM offers an arm64 VMM (`elvisor kvm info`), and what that means for
running elvisor guests (`elvisor doctor`)."""

from __future__ import annotations

import errno
import json
import mmap
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from elvisor.errors import UserError
from elvisor.kvm.fds import KvmError, Vm, open_kvm
from elvisor.kvm.uapi import (
    KVM_API_VERSION,
    KVM_ARM_VM_SMCCC_CTRL,
    KVM_ARM_VM_SMCCC_FILTER,
    Cap,
    DeviceType,
)

# (label, capability); the label is what `kvm info` prints and the JSON key
CAPABILITIES: tuple[tuple[str, Cap], ...] = (
    ("user memory", Cap.KVM_CAP_USER_MEMORY),
    ("one-reg", Cap.KVM_CAP_ONE_REG),
    ("IRQ line", Cap.KVM_CAP_IRQCHIP),
    ("irqfd", Cap.KVM_CAP_IRQFD),
    ("irqfd resample", Cap.KVM_CAP_IRQFD_RESAMPLE),
    ("ioeventfd", Cap.KVM_CAP_IOEVENTFD),
    ("device control", Cap.KVM_CAP_DEVICE_CTRL),
    ("PSCI 0.2", Cap.KVM_CAP_ARM_PSCI_0_2),
    ("PMU v3", Cap.KVM_CAP_ARM_PMU_V3),
    ("SVE", Cap.KVM_CAP_ARM_SVE),
    ("pointer auth (address)", Cap.KVM_CAP_ARM_PTRAUTH_ADDRESS),
    ("pointer auth (generic)", Cap.KVM_CAP_ARM_PTRAUTH_GENERIC),
    ("MTE", Cap.KVM_CAP_ARM_MTE),
    ("32-bit EL1", Cap.KVM_CAP_ARM_EL1_32BIT),
    ("guest debug", Cap.KVM_CAP_SET_GUEST_DEBUG),
    ("NISV to user", Cap.KVM_CAP_ARM_NISV_TO_USER),
    ("MP state", Cap.KVM_CAP_MP_STATE),
    ("readonly memory", Cap.KVM_CAP_READONLY_MEM),
    ("dirty log (manual protect)", Cap.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2),
    ("dirty ring", Cap.KVM_CAP_DIRTY_LOG_RING),
    ("immediate exit", Cap.KVM_CAP_IMMEDIATE_EXIT),
    ("IRQ line layout 2", Cap.KVM_CAP_ARM_IRQ_LINE_LAYOUT_2),
    ("system suspend", Cap.KVM_CAP_ARM_SYSTEM_SUSPEND),
)


@dataclass
class KvmReport:
    """Everything `kvm info` prints; plain data, so it can be JSON."""

    api_version: int
    kernel: str
    machine: str
    page_size: int
    kvm_mode: str  # "VHE", "nVHE", "protected" or "unknown"
    preferred_target: int
    max_vcpus: int
    recommended_vcpus: int
    ipa_bits: int
    vgic_v2: bool
    vgic_v3: bool
    smccc_filter: bool  # hypercalls forwarded to user space (Linux 6.4+)
    capabilities: dict[str, int] = field(default_factory=dict)
    vhost_net: bool = False
    vhost_vsock: bool = False


def _kvm_mode() -> str:
    """How KVM runs, from its boot message (needs permission to read the kernel log)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return "unknown"
    mode = "unknown"
    try:
        while True:
            try:
                record = os.read(fd, 8192).decode(errors="replace")
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:  # records overwritten while reading
                    continue
                break
            if not record:
                break
            if "mode initialized" not in record:
                continue
            if "rotected" in record:  # "Protected nVHE mode initialized successfully"
                mode = "protected"
            elif "nVHE" in record or "Hyp mode" in record:  # "Hyp nVHE mode ...", 6.1: "Hyp mode"
                mode = "nVHE"
            elif "VHE mode" in record:
                mode = "VHE"
    finally:
        os.close(fd)
    return mode


def _can_create(vm: Vm, dev_type: DeviceType) -> bool:
    try:
        vm.create_device(dev_type, test=True)
    except KvmError:
        return False
    return True


def probe(path: str = "/dev/kvm", machine: str | None = None) -> KvmReport:
    with open_kvm(path, machine) as kvm:
        api = kvm.get_api_version()
        if api != KVM_API_VERSION:
            raise UserError(
                f"{path} speaks KVM API version {api}, elvisor needs {KVM_API_VERSION}: "
                "this kernel's KVM is not the standard one"
            )
        with kvm.create_vm() as vm:
            caps = {label: vm.check_extension(cap) for label, cap in CAPABILITIES}
            report = KvmReport(
                api_version=api,
                kernel=os.uname().release,
                machine=platform.machine(),
                page_size=mmap.PAGESIZE,
                kvm_mode=_kvm_mode(),
                preferred_target=int(vm.arm_preferred_target().target),
                max_vcpus=vm.check_extension(Cap.KVM_CAP_MAX_VCPUS),
                recommended_vcpus=vm.check_extension(Cap.KVM_CAP_NR_VCPUS),
                ipa_bits=kvm.check_extension(Cap.KVM_CAP_ARM_VM_IPA_SIZE) or 40,
                vgic_v2=_can_create(vm, DeviceType.KVM_DEV_TYPE_ARM_VGIC_V2),
                vgic_v3=_can_create(vm, DeviceType.KVM_DEV_TYPE_ARM_VGIC_V3),
                smccc_filter=vm.has_device_attr(KVM_ARM_VM_SMCCC_CTRL, KVM_ARM_VM_SMCCC_FILTER),
                capabilities=caps,
                vhost_net=os.path.exists("/dev/vhost-net"),
                vhost_vsock=os.path.exists("/dev/vhost-vsock"),
            )
    return report


def _yes(value: bool | int) -> str:
    return "yes" if value else "no"


def format_info(r: KvmReport) -> str:
    rows = [
        ("API version", str(r.api_version)),
        ("host kernel", f"{r.kernel} ({r.machine})"),
        ("host page size", f"{r.page_size // 1024} KiB"),
        ("KVM mode", r.kvm_mode),
        ("preferred vCPU target", str(r.preferred_target)),
        ("max vCPUs", f"{r.max_vcpus} (recommended {r.recommended_vcpus})"),
        ("IPA size", f"{r.ipa_bits} bits"),
        ("vGIC v2", _yes(r.vgic_v2)),
        ("vGIC v3", _yes(r.vgic_v3)),
        ("SMCCC filter (hypercalls to user space)", _yes(r.smccc_filter)),
    ]
    for label, value in r.capabilities.items():
        shown = _yes(value) if value in (0, 1) else f"yes ({value})"
        rows.append((label, shown))
    rows += [("/dev/vhost-net", _yes(r.vhost_net)), ("/dev/vhost-vsock", _yes(r.vhost_vsock))]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


@dataclass
class Verdict:
    can_run: bool
    gic: int | None  # the GIC version elvisor will give guests
    ipa_bits: int
    page_size: int
    max_vcpus: int
    checks: list[Check]


def diagnose(r: KvmReport) -> Verdict:
    caps = r.capabilities
    gic = 3 if r.vgic_v3 else 2 if r.vgic_v2 else None
    old_kernel = "needs a newer host kernel"
    checks = [
        Check("KVM API", r.api_version == KVM_API_VERSION, f"version {r.api_version}"),
        Check("guest memory", bool(caps["user memory"]), "KVM_CAP_USER_MEMORY", old_kernel),
        Check("vCPU registers", bool(caps["one-reg"]), "KVM_CAP_ONE_REG", old_kernel),
        Check("PSCI 0.2", bool(caps["PSCI 0.2"]), "CPU power management for guests", old_kernel),
        Check(
            "interrupt controller",
            gic is not None,
            f"in-kernel vGICv{gic}" if gic else "neither vGICv2 nor vGICv3 can be created",
            "the host's GIC cannot be virtualised: a GIC with virtualization support is "
            "needed (a GICv3 host without GICv2 compatibility still offers vGICv3)",
        ),
        Check(
            "irqfd/ioeventfd",
            bool(caps["irqfd"] and caps["ioeventfd"]),
            "fast virtio notifications",
            old_kernel,
            required=False,
        ),
        Check(
            "hypercalls to Python",
            r.smccc_filter,
            "SMCCC filter (KVM_ARM_VM_SMCCC_CTRL)",
            "needs host Linux 6.4 or newer",
            required=False,
        ),
        Check(
            "vhost-net",
            r.vhost_net,
            "kernel data plane for virtio-net",
            "modprobe vhost_net",
            required=False,
        ),
        Check(
            "vhost-vsock",
            r.vhost_vsock,
            "host-guest sockets",
            "modprobe vhost_vsock",
            required=False,
        ),
    ]
    can_run = all(c.ok for c in checks if c.required)
    return Verdict(can_run, gic, r.ipa_bits, r.page_size, r.max_vcpus, checks)


def format_verdict(v: Verdict) -> str:
    lines = []
    for c in v.checks:
        mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
        lines.append(f"[{mark}] {c.name}: {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"       fix: {c.fix}")
    if v.can_run:
        lines.append(
            f"This host can run elvisor guests: GICv{v.gic}, {v.ipa_bits}-bit guest physical "
            f"addresses, up to {v.max_vcpus} vCPUs, host pages of {v.page_size // 1024} KiB "
            f"(guest RAM is sized in multiples of {v.page_size // 1024} KiB)."
        )
    else:
        lines.append("This host cannot run elvisor guests: see FAIL above.")
    return "\n".join(lines)


def to_json(obj: Any) -> str:
    return json.dumps(asdict(obj), indent=2)
