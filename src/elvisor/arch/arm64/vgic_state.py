"""The in-kernel vGIC's whole state, read and written through its KVM device attributes
(Documentation/virt/kvm/devices/arm-vgic.rst and arm-vgic-v3.rst), for snapshots.

Registers are named as in the GIC architecture specification (IHI 0048 for v2, IHI 0069 for
v3) and read as the guest would see them, except ISPENDR, which gives the latched pending
state. The line levels of level-triggered interrupts are not saved: the devices drive their
lines again when their own state is restored. Every access needs the vCPUs out of KVM_RUN.
"""

from __future__ import annotations

import ctypes
import errno

from elvisor.arch.arm64 import layout
from elvisor.arch.arm64.gic import Gic
from elvisor.kvm import KvmError

KVM_DEV_ARM_VGIC_GRP_DIST_REGS = 1
KVM_DEV_ARM_VGIC_GRP_CPU_REGS = 2  # GICv2's CPU interface
KVM_DEV_ARM_VGIC_GRP_REDIST_REGS = 5
KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS = 6

GICD_CTLR, GICD_IIDR = 0x0000, 0x0008
NR_IRQS = layout.NR_IRQS
SPI_WORDS = range(1, NR_IRQS // 32)  # 32-bit words of 1 bit per interrupt, SPIs only
SGI_BASE = 0x10000  # a redistributor's second frame


def _words(base: int, count: int, first: int = 0) -> list[int]:
    return [base + 4 * n for n in range(first, count)]


# GICv3 distributor (SPIs; SGIs and PPIs live in the redistributors), in restore order:
# configuration first, then the state that depends on it, enables last
V3_DIST = [
    *_words(0x0080, NR_IRQS // 32, 1),  # GICD_IGROUPR<n>
    *_words(0x0400, NR_IRQS // 4, 8),  # GICD_IPRIORITYR<n>
    *_words(0x0C00, NR_IRQS // 16, 2),  # GICD_ICFGR<n>
    *_words(0x0D00, NR_IRQS // 32, 1),  # GICD_IGRPMODR<n>
    *(0x6000 + 8 * n + half for n in range(32, NR_IRQS) for half in (0, 4)),  # GICD_IROUTER<n>
    *_words(0x0200, NR_IRQS // 32, 1),  # GICD_ISPENDR<n> (the latch)
    *_words(0x0300, NR_IRQS // 32, 1),  # GICD_ISACTIVER<n>
    *_words(0x0100, NR_IRQS // 32, 1),  # GICD_ISENABLER<n>
]
# GICv3 redistributor, per vCPU: its SGIs and PPIs, in the same order
V3_REDIST = [
    0x0000,  # GICR_CTLR
    SGI_BASE + 0x0080,  # GICR_IGROUPR0
    *_words(SGI_BASE + 0x0400, 8),  # GICR_IPRIORITYR<n>
    SGI_BASE + 0x0C00,  # GICR_ICFGR0
    SGI_BASE + 0x0C04,  # GICR_ICFGR1
    SGI_BASE + 0x0D00,  # GICR_IGRPMODR0
    SGI_BASE + 0x0200,  # GICR_ISPENDR0
    SGI_BASE + 0x0300,  # GICR_ISACTIVER0
    SGI_BASE + 0x0100,  # GICR_ISENABLER0
]


def _sysreg(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    return op0 << 14 | op1 << 11 | crn << 7 | crm << 3 | op2


# GICv3 CPU interface, per vCPU (ICC_*_EL1), in restore order
V3_SYSREGS = [
    _sysreg(3, 0, 12, 12, 5),  # ICC_SRE_EL1
    _sysreg(3, 0, 12, 12, 4),  # ICC_CTLR_EL1
    _sysreg(3, 0, 4, 6, 0),  # ICC_PMR_EL1
    _sysreg(3, 0, 12, 8, 3),  # ICC_BPR0_EL1
    _sysreg(3, 0, 12, 12, 3),  # ICC_BPR1_EL1
    *(_sysreg(3, 0, 12, 8, 4 + n) for n in range(4)),  # ICC_AP0R<n>_EL1
    *(_sysreg(3, 0, 12, 9, n) for n in range(4)),  # ICC_AP1R<n>_EL1
    _sysreg(3, 0, 12, 12, 6),  # ICC_IGRPEN0_EL1
    _sysreg(3, 0, 12, 12, 7),  # ICC_IGRPEN1_EL1
]

# GICv2 distributor: registers banked per CPU (SGIs and PPIs), then the shared ones (SPIs)
V2_BANKED = [
    0x0080,  # GICD_IGROUPR0
    *_words(0x0400, 8),  # GICD_IPRIORITYR0-7
    0x0C04,  # GICD_ICFGR1
    *_words(0x0F20, 4),  # GICD_SPENDSGIR<n>
    0x0200,  # GICD_ISPENDR0
    0x0300,  # GICD_ISACTIVER0
    0x0100,  # GICD_ISENABLER0
]
V2_SHARED = [
    *_words(0x0080, NR_IRQS // 32, 1),  # GICD_IGROUPR<n>
    *_words(0x0400, NR_IRQS // 4, 8),  # GICD_IPRIORITYR<n>
    *_words(0x0800, NR_IRQS // 4, 8),  # GICD_ITARGETSR<n>
    *_words(0x0C00, NR_IRQS // 16, 2),  # GICD_ICFGR<n>
    *_words(0x0200, NR_IRQS // 32, 1),  # GICD_ISPENDR<n>
    *_words(0x0300, NR_IRQS // 32, 1),  # GICD_ISACTIVER<n>
    *_words(0x0100, NR_IRQS // 32, 1),  # GICD_ISENABLER<n>
]
# GICv2 CPU interface, per CPU: GICC_CTLR, GICC_PMR, GICC_BPR, GICC_ABPR, GICC_APR<n>
V2_CPU = [0x00, 0x04, 0x08, 0x1C, *_words(0xD0, 4)]


def _affinity(mpidr: int) -> int:
    """An MPIDR as the vGIC's attributes take it: Aff3, Aff2, Aff1, Aff0 in bits 63-32."""
    aff3 = (mpidr >> 32) & 0xFF
    return (aff3 << 24 | (mpidr & 0xFF_FFFF)) << 32


class _Access:
    def __init__(self, gic: Gic) -> None:
        self.device = gic.device

    def get(self, group: int, attr: int, wide: bool = False) -> int | None:
        """A register, or None where this KVM does not have it (say, AP registers beyond
        the host's priority bits)."""
        value: ctypes.c_uint64 | ctypes.c_uint32 = ctypes.c_uint64() if wide else ctypes.c_uint32()
        try:
            self.device.get_device_attr(group, attr, value)
        except KvmError as e:
            if e.errno in (errno.ENXIO, errno.EINVAL):
                return None
            raise
        return int(value.value)

    def set(self, group: int, attr: int, value: int, wide: bool = False) -> None:
        cell = ctypes.c_uint64(value) if wide else ctypes.c_uint32(value)
        self.device.set_device_attr(group, attr, cell)


Registers = list[tuple[int, int]]  # (attr, value), in restore order


def save(gic: Gic, mpidrs: list[int]) -> dict[str, object]:
    """The vGIC's registers: {"version", "dist", "cpus": [per vCPU]}."""
    access = _Access(gic)

    def read(group: int, attrs: list[int], wide: bool = False) -> Registers:
        found = ((attr, access.get(group, attr, wide)) for attr in attrs)
        return [(attr, value) for attr, value in found if value is not None]

    dist_group = KVM_DEV_ARM_VGIC_GRP_DIST_REGS
    cpus: list[dict[str, Registers]] = []
    if gic.version == 3:
        dist = read(dist_group, [GICD_IIDR, GICD_CTLR, *V3_DIST])
        for mpidr in mpidrs:
            cpu = _affinity(mpidr)
            redist = read(KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, [cpu | o for o in V3_REDIST])
            sysregs = read(KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, [cpu | r for r in V3_SYSREGS], True)
            cpus.append({"redist": redist, "sysregs": sysregs})
    else:
        dist = read(dist_group, [GICD_IIDR, GICD_CTLR, *V2_SHARED])
        for index in range(len(mpidrs)):
            cpu = index << 32
            banked = read(dist_group, [cpu | o for o in V2_BANKED])
            interface = read(KVM_DEV_ARM_VGIC_GRP_CPU_REGS, [cpu | o for o in V2_CPU])
            cpus.append({"banked": banked, "interface": interface})
    return {"version": gic.version, "dist": dist, "cpus": cpus}


# (group, a vCPU's part of the state, 64-bit): what comes after the distributor's first
# registers and before its others; then what comes after them
BEFORE_DIST = {3: (KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, "redist", False),
               2: (KVM_DEV_ARM_VGIC_GRP_DIST_REGS, "banked", False)}  # fmt: skip
AFTER_DIST = {3: (KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, "sysregs", True),
              2: (KVM_DEV_ARM_VGIC_GRP_CPU_REGS, "interface", False)}  # fmt: skip


def restore(gic: Gic, mpidrs: list[int], state: dict[str, object]) -> None:
    """Write back what `save` read (into a vGIC of the same version and vCPUs, not yet run):
    GICD_IIDR and GICD_CTLR first, as the KVM documentation asks, then each vCPU's
    redistributor (v3) or banked distributor registers (v2), the distributor's others (the
    enables last), and each vCPU's CPU interface."""
    access = _Access(gic)
    dist = _registers(state["dist"])
    cpus = state["cpus"]
    if not isinstance(cpus, list) or len(cpus) != len(mpidrs):
        raise ValueError(f"the vGIC state is for another number of vCPUs than {len(mpidrs)}")
    steps: list[tuple[int, Registers, bool]] = [(KVM_DEV_ARM_VGIC_GRP_DIST_REGS, dist[:2], False)]
    group, part, wide = BEFORE_DIST[gic.version]
    steps += [(group, _registers(cpu[part]), wide) for cpu in cpus]
    steps.append((KVM_DEV_ARM_VGIC_GRP_DIST_REGS, dist[2:], False))
    group, part, wide = AFTER_DIST[gic.version]
    steps += [(group, _registers(cpu[part]), wide) for cpu in cpus]
    for group, registers, wide in steps:
        for attr, value in registers:
            access.set(group, attr, value, wide)


def _registers(value: object) -> Registers:
    if not isinstance(value, list) or not all(
        isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(v, int) for v in p)
        for p in value
    ):
        raise ValueError("vGIC registers are [attribute, value] pairs")
    return [(int(a), int(v)) for a, v in value]
