"""AArch64 register ids for KVM_{GET,SET}_ONE_REG (arch/arm64/include/uapi/asm/kvm.h)."""

from __future__ import annotations

KVM_REG_ARM64 = 0x6000_0000_0000_0000
KVM_REG_SIZE_U64 = 0x0030_0000_0000_0000
KVM_REG_ARM_CORE = 0x0010 << 16
KVM_REG_ARM64_SYSREG = 0x0013 << 16

# struct kvm_regs: struct user_pt_regs {regs[31], sp, pc, pstate}, then sp_el1, elr_el1, ...
_SP_EL0_INDEX = 31
_PC_INDEX = 32
_PSTATE_INDEX = 33
_SP_EL1_INDEX = 34
_ELR_EL1_INDEX = 35


def _core(u64_index: int) -> int:
    """A 64-bit core register, by its index in struct kvm_regs (ids count 32-bit words)."""
    return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (u64_index * 2)


def x(n: int) -> int:
    """General-purpose register Xn."""
    if not 0 <= n <= 30:
        raise ValueError(f"there is no X{n}")
    return _core(n)


SP_EL0 = _core(_SP_EL0_INDEX)
PC = _core(_PC_INDEX)
PSTATE = _core(_PSTATE_INDEX)
SP_EL1 = _core(_SP_EL1_INDEX)
ELR_EL1 = _core(_ELR_EL1_INDEX)


def sysreg(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    return (
        KVM_REG_ARM64
        | KVM_REG_SIZE_U64
        | KVM_REG_ARM64_SYSREG
        | (op0 << 14)
        | (op1 << 11)
        | (crn << 7)
        | (crm << 3)
        | op2
    )


MPIDR_EL1 = sysreg(3, 0, 0, 0, 5)
SCTLR_EL1 = sysreg(3, 0, 1, 0, 0)
ESR_EL1 = sysreg(3, 0, 5, 2, 0)
FAR_EL1 = sysreg(3, 0, 6, 0, 0)
VBAR_EL1 = sysreg(3, 0, 12, 0, 0)

# PSTATE (SPSR) fields
PSR_MODE_EL1H = 0x5
PSR_F_BIT = 1 << 6
PSR_I_BIT = 1 << 7
PSR_A_BIT = 1 << 8
PSR_D_BIT = 1 << 9
BOOT_PSTATE = PSR_MODE_EL1H | PSR_D_BIT | PSR_A_BIT | PSR_I_BIT | PSR_F_BIT  # EL1h, DAIF masked

MPIDR_AFFINITY_MASK = 0xFF_00FF_FFFF  # Aff3 (bits 32-39), Aff2..Aff0 (bits 0-23)
