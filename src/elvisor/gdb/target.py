"""The VM as the gdb stub sees it (a `session.Target`): registers through KVM's one-reg
interface, memory through the guest's own page tables, breakpoints and watchpoints through
KVM_SET_GUEST_DEBUG.

Software breakpoints are `BRK #0` written over the instruction (the original kept and put
back); hardware breakpoints and watchpoints use the debug registers KVM lends the guest while
it is debugged, as many as the host has. Every call is made while the VM is paused.
"""

from __future__ import annotations

import ctypes
from typing import Any, NamedTuple

from elvisor.arch.arm64.walk import Stage1, translate
from elvisor.fence import sync_instructions
from elvisor.gdb.registers import NUMBERS, REGISTERS, SP, sp_id
from elvisor.kvm import KvmError
from elvisor.kvm.uapi import (
    KVM_ARM_MAX_DBG_REGS,
    KVM_GUESTDBG_ENABLE,
    KVM_GUESTDBG_SINGLESTEP,
    KVM_GUESTDBG_USE_HW,
    KVM_GUESTDBG_USE_SW_BP,
    Cap,
    kvm_guest_debug,
)
from elvisor.memory import GuestMemoryError
from elvisor.vm import Vm

BRK = (0xD420_0000).to_bytes(4, "little")  # BRK #0
PAGE = 0x1000  # (the smallest granule: a read is split at these boundaries, always safe)
BCR_ENABLE = (0b1111 << 5) | (0b11 << 1) | 1  # BAS: all of the instruction; EL1 and EL0; on
WATCH_LSC = {"read": 0b01, "write": 0b10, "access": 0b11}
STAGE1 = ("sctlr_el1", "tcr_el1", "ttbr0_el1", "ttbr1_el1")


class Watch(NamedTuple):
    kind: str
    address: int
    length: int


class VmTarget:
    def __init__(self, vm: Vm) -> None:
        self.vm = vm
        machine = vm.machine
        assert machine is not None
        self.machine = machine
        kvm = machine.kvm
        self.hw_breakpoints = min(kvm.check_extension(Cap.KVM_CAP_GUEST_DEBUG_HW_BPS),
                                  KVM_ARM_MAX_DBG_REGS)  # fmt: skip
        self.hw_watchpoints = min(kvm.check_extension(Cap.KVM_CAP_GUEST_DEBUG_HW_WPS),
                                  KVM_ARM_MAX_DBG_REGS)  # fmt: skip
        self.software: dict[int, tuple[int, bytes]] = {}  # address: (gpa, original)
        self.hardware: list[int] = []  # breakpoint addresses
        self.watches: list[Watch] = []

    def vcpus(self) -> int:
        return len(self.machine.vcpus)

    # --- registers ------------------------------------------------------------------------

    def _reg_id(self, vcpu: int, number: int) -> int:
        reg_id = REGISTERS[number].kvm_id
        if reg_id == SP:
            return sp_id(self.machine.vcpus[vcpu].get_one_reg(REGISTERS[NUMBERS["cpsr"]].kvm_id))
        return reg_id

    def read_register(self, vcpu: int, number: int) -> bytes | None:
        size = REGISTERS[number].bits // 8
        try:
            value = self.machine.vcpus[vcpu].get_one_reg(self._reg_id(vcpu, number))
        except KvmError:
            return None
        return (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")

    def write_register(self, vcpu: int, number: int, value: bytes) -> bool:
        the_vcpu = self.machine.vcpus[vcpu]
        reg_id = self._reg_id(vcpu, number)
        new = int.from_bytes(value, "little")
        try:
            if REGISTERS[number].name == "cpsr":  # (gdb's is the low 32 bits of KVM's 64)
                new |= the_vcpu.get_one_reg(reg_id) & ~0xFFFF_FFFF
            the_vcpu.set_one_reg(reg_id, new)
        except KvmError:
            return False
        return True

    # --- memory ---------------------------------------------------------------------------

    def _stage1(self, vcpu: int) -> Stage1:
        the_vcpu = self.machine.vcpus[vcpu]
        return Stage1(*(the_vcpu.get_one_reg(REGISTERS[NUMBERS[r]].kvm_id) for r in STAGE1))

    def _physical(self, vcpu: int, address: int, length: int) -> list[tuple[int, int]] | None:
        """(gpa, length) pieces of [address, address + length), or None if any is unmapped."""
        regs = self._stage1(vcpu)
        memory = self.machine.memory

        def descriptor(gpa: int) -> int | None:
            try:
                return int.from_bytes(memory.read(gpa, 8), "little")
            except GuestMemoryError:
                return None

        pieces = []
        while length > 0:
            size = min(length, PAGE - (address & (PAGE - 1)))
            gpa = translate(address, regs, descriptor)
            if gpa is None:
                return None
            pieces.append((gpa, size))
            address, length = (address + size) & ((1 << 64) - 1), length - size
        return pieces

    def read_memory(self, vcpu: int, address: int, length: int) -> bytes | None:
        try:
            pieces = self._physical(vcpu, address, length)
            if pieces is None:
                return None
            data = b"".join(self.machine.memory.read(gpa, size) for gpa, size in pieces)
        except (GuestMemoryError, KvmError):
            return None
        for bp_address, (_, original) in self.software.items():  # (gdb sees the original)
            data = _overlay(data, address, bp_address, original)
        return data

    def write_memory(self, vcpu: int, address: int, data: bytes) -> bool:
        try:
            pieces = self._physical(vcpu, address, len(data))
            if pieces is None:
                return False
            for gpa, _ in pieces:
                self.machine.memory.check_range(gpa, 1)
            offset = 0
            for gpa, size in pieces:
                self.machine.memory.write(gpa, data[offset : offset + size])
                offset += size
        except (GuestMemoryError, KvmError):
            return False
        return True

    # --- breakpoints and running ----------------------------------------------------------

    def set_breakpoint(self, kind: str, address: int, length: int, on: bool) -> bool:
        if kind == "sw":
            return self._software(address, on)
        if kind == "hw":
            return _toggle(self.hardware, address, on, self.hw_breakpoints)
        if length < 1 or (address & 7) + length > 8:
            return False  # (one watchpoint covers bytes of one aligned doubleword)
        return _toggle(self.watches, Watch(kind, address, length), on, self.hw_watchpoints)

    def _write_code(self, gpa: int, code: bytes) -> None:
        """Instructions into guest memory, where the guest's next fetch sees them."""
        view = self.machine.memory.view(gpa, len(code))
        view[:] = code
        sync_instructions(ctypes.addressof(ctypes.c_char.from_buffer(view)))
        view.release()

    def _software(self, address: int, on: bool) -> bool:
        memory = self.machine.memory
        if not on:
            if address in self.software:
                gpa, original = self.software.pop(address)
                self._write_code(gpa, original)
            return True
        if address in self.software:
            return True
        pieces = self._physical(self.vm_general(), address, 4)
        if pieces is None or len(pieces) != 1:
            return False
        gpa = pieces[0][0]
        try:
            original = memory.read(gpa, 4)
            self._write_code(gpa, BRK)
        except GuestMemoryError:
            return False
        self.software[address] = (gpa, original)
        return True

    def vm_general(self) -> int:
        return 0  # (breakpoint addresses are translated as vCPU 0 sees them: a kernel's)

    def watch_at(self, far: int) -> Watch | None:
        """The watchpoint an access to `far` hit."""
        for watch in self.watches:
            if watch.address & ~7 <= far < (watch.address & ~7) + 8:
                return watch
        return self.watches[0] if len(self.watches) == 1 else None

    def resume(self, step: int | None) -> None:
        debug = kvm_guest_debug()
        for slot, address in enumerate(self.hardware):
            debug.dbg_bvr[slot] = address & ~3
            debug.dbg_bcr[slot] = BCR_ENABLE
        for slot, watch in enumerate(self.watches):
            bas = ((1 << watch.length) - 1) << (watch.address & 7)
            debug.dbg_wvr[slot] = watch.address & ~7
            debug.dbg_wcr[slot] = (bas << 5) | (WATCH_LSC[watch.kind] << 3) | (0b11 << 1) | 1
        control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP
        if self.hardware or self.watches:
            control |= KVM_GUESTDBG_USE_HW
        for index, vcpu in enumerate(self.machine.vcpus):
            debug.control = control | (KVM_GUESTDBG_SINGLESTEP if index == step else 0)
            vcpu.set_guest_debug(debug)
        self.vm.resume(only=step)

    def detach(self) -> None:
        """Every breakpoint out of the guest, and KVM's debugging off."""
        for address in list(self.software):
            self._software(address, False)
        self.hardware.clear()
        self.watches.clear()
        for vcpu in self.machine.vcpus:
            vcpu.set_guest_debug(kvm_guest_debug())

    def interrupt(self) -> None:
        pass  # (the server pauses the VM)


def _toggle(items: list[Any], item: object, on: bool, most: int) -> bool:
    if not on:
        if item in items:
            items.remove(item)
        return True
    if item in items:
        return True
    if len(items) >= most:
        return False
    items.append(item)
    return True


def _overlay(data: bytes, start: int, address: int, original: bytes) -> bytes:
    """`data` (read from `start`) with a breakpoint's original bytes where they fall in it."""
    out = bytearray(data)
    for i, byte in enumerate(original):
        where = address + i - start
        if 0 <= where < len(out):
            out[where] = byte
    return bytes(out)
