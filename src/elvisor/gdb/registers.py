"""The registers gdb sees, in its numbering, and where KVM keeps each (KVM_GET/SET_ONE_REG).

gdb numbers AArch64's registers x0-x30, sp, pc, cpsr (0-33), then v0-v31, fpsr, fpcr
(34-67); elvisor adds the system registers a kernel debugger wants (68 on). `target.xml`
describes them all to gdb, in the features its AArch64 support looks for by name.
"""

from __future__ import annotations

from typing import NamedTuple

from elvisor.arch.arm64 import regs

KVM_REG_SIZE_U32 = 0x0020_0000_0000_0000
KVM_REG_SIZE_U128 = 0x0040_0000_0000_0000
_FP_REGS = 336  # offsetof(struct kvm_regs, fp_regs): after 34 + 2 + 5 u64s, 16-byte aligned
SP = -1  # (not one KVM register: SP_EL1 or SP_EL0, as PSTATE selects)


def _core(offset: int, size: int) -> int:
    """A core register by its byte offset in struct kvm_regs (ids count 32-bit words)."""
    return regs.KVM_REG_ARM64 | size | regs.KVM_REG_ARM_CORE | (offset // 4)


class Register(NamedTuple):
    name: str
    bits: int
    kvm_id: int  # or SP
    feature: str
    type: str


CORE, FPU, SYS = "org.gnu.gdb.aarch64.core", "org.gnu.gdb.aarch64.fpu", "org.elvisor.aarch64.sys"
REGISTERS: list[Register] = [
    *(Register(f"x{n}", 64, regs.x(n), CORE, "int") for n in range(31)),
    Register("sp", 64, SP, CORE, "data_ptr"),
    Register("pc", 64, regs.PC, CORE, "code_ptr"),
    Register("cpsr", 32, regs.PSTATE, CORE, "int"),  # (KVM's is 64 bits: the low half)
    *(
        Register(f"v{n}", 128, _core(_FP_REGS + 16 * n, KVM_REG_SIZE_U128), FPU, "aarch64v")
        for n in range(32)
    ),
    Register("fpsr", 32, _core(_FP_REGS + 512, KVM_REG_SIZE_U32), FPU, "int"),
    Register("fpcr", 32, _core(_FP_REGS + 516, KVM_REG_SIZE_U32), FPU, "int"),
    Register("sctlr_el1", 64, regs.SCTLR_EL1, SYS, "int"),
    Register("ttbr0_el1", 64, regs.sysreg(3, 0, 2, 0, 0), SYS, "int"),
    Register("ttbr1_el1", 64, regs.sysreg(3, 0, 2, 0, 1), SYS, "int"),
    Register("tcr_el1", 64, regs.sysreg(3, 0, 2, 0, 2), SYS, "int"),
    Register("esr_el1", 64, regs.ESR_EL1, SYS, "int"),
    Register("far_el1", 64, regs.FAR_EL1, SYS, "int"),
    Register("vbar_el1", 64, regs.VBAR_EL1, SYS, "int"),
]
NUMBERS = {r.name: n for n, r in enumerate(REGISTERS)}

PSTATE_SPSEL = 1 << 0  # M[0]: at EL1, SP_EL1 (EL1h) rather than SP_EL0 (EL1t)
PSTATE_EL = 0b11 << 2  # M[3:2]: the exception level


def sp_id(pstate: int) -> int:
    """The KVM register that is `sp` for the vCPU's current mode."""
    at_el1 = (pstate & PSTATE_EL) >> 2 == 1
    return regs.SP_EL1 if at_el1 and pstate & PSTATE_SPSEL else regs.SP_EL0


_VECTOR_TYPES = """\
  <vector id="v2d" type="ieee_double" count="2"/>
  <vector id="v2u" type="uint64" count="2"/>
  <vector id="v4f" type="ieee_single" count="4"/>
  <vector id="v4u" type="uint32" count="4"/>
  <vector id="v8u" type="uint16" count="8"/>
  <vector id="v16u" type="uint8" count="16"/>
  <union id="aarch64v">
    <field name="d" type="v2d"/>
    <field name="s" type="v4f"/>
    <field name="ud" type="v2u"/>
    <field name="us" type="v4u"/>
    <field name="uh" type="v8u"/>
    <field name="ub" type="v16u"/>
    <field name="q" type="uint128"/>
  </union>
"""


def target_xml() -> str:
    """The target description gdb asks for (qXfer:features:read:target.xml)."""
    lines = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
             "<target>", "<architecture>aarch64</architecture>"]  # fmt: skip
    feature = None
    for number, register in enumerate(REGISTERS):
        if register.feature != feature:
            if feature is not None:
                lines.append("</feature>")
            feature = register.feature
            lines.append(f'<feature name="{feature}">')
            if feature == FPU:
                lines.append(_VECTOR_TYPES.rstrip())
        lines.append(f'  <reg name="{register.name}" bitsize="{register.bits}" '
                     f'type="{register.type}" regnum="{number}"/>')  # fmt: skip
    lines += ["</feature>", "</target>"]
    return "\n".join(lines) + "\n"
