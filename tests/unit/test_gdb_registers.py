"""The registers gdb is told about: its AArch64 numbering, KVM's ids, a well-formed target.xml."""

import xml.etree.ElementTree as ET

from elvisor.arch.arm64 import regs
from elvisor.gdb.registers import NUMBERS, REGISTERS, SP, sp_id, target_xml


def test_gdb_numbering_and_kvm_ids() -> None:
    assert [NUMBERS[n] for n in ("x0", "x30", "sp", "pc", "cpsr", "v0", "v31", "fpsr", "fpcr")] == [
        0, 30, 31, 32, 33, 34, 65, 66, 67]  # fmt: skip
    assert REGISTERS[NUMBERS["pc"]].kvm_id == regs.PC and REGISTERS[NUMBERS["sp"]].kvm_id == SP
    # struct kvm_regs: fp_regs at byte 336 (16-byte aligned after 41 u64s): ids count words
    assert REGISTERS[NUMBERS["v0"]].kvm_id == 0x6040_0000_0010_0054
    assert REGISTERS[NUMBERS["v1"]].kvm_id == 0x6040_0000_0010_0058
    assert REGISTERS[NUMBERS["fpsr"]].kvm_id == 0x6020_0000_0010_00D4
    assert REGISTERS[NUMBERS["fpcr"]].kvm_id == 0x6020_0000_0010_00D5
    assert REGISTERS[NUMBERS["tcr_el1"]].kvm_id == 0x6030_0000_0013_C102  # op0 3, CRn 2, op2 2


def test_sp_follows_the_mode() -> None:
    assert sp_id(0x3C5) == regs.SP_EL1  # EL1h
    assert sp_id(0x3C4) == regs.SP_EL0  # EL1t
    assert sp_id(0x0) == regs.SP_EL0  # EL0t


def test_target_xml_lists_every_register_in_its_feature() -> None:
    root = ET.fromstring(target_xml().split("\n", 2)[2])  # (past the XML and DOCTYPE lines)
    assert root.findtext("architecture") == "aarch64"
    features = {f.get("name"): f for f in root.findall("feature")}
    assert list(features) == ["org.gnu.gdb.aarch64.core", "org.gnu.gdb.aarch64.fpu",
                              "org.elvisor.aarch64.sys"]  # fmt: skip
    numbered = [(r.get("name"), int(r.get("regnum"))) for f in features.values()
                for r in f.findall("reg")]  # fmt: skip
    assert numbered == [(r.name, n) for n, r in enumerate(REGISTERS)]
    assert features["org.gnu.gdb.aarch64.fpu"].find("union").get("id") == "aarch64v"
