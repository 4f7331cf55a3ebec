"""Hypercalls: SMCCC calls (HVC or SMC) a guest makes, forwarded by KVM to Python handlers.

KVM answers PSCI and the SMCCC calls it knows itself; a range of other function IDs is sent
to user space through the VM's SMCCC filter (KVM_ARM_VM_SMCCC_CTRL, Linux 6.4 or newer), as
a KVM_EXIT_HYPERCALL exit. The table here says who answers which range.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from elvisor.arch.arm64 import regs
from elvisor.errors import UserError
from elvisor.kvm import KvmError
from elvisor.kvm.fds import Vm as VmFd
from elvisor.kvm.uapi import (
    KVM_ARM_VM_SMCCC_CTRL,
    KVM_ARM_VM_SMCCC_FILTER,
    KVM_HYPERCALL_EXIT_SMC,
    KVM_SMCCC_FILTER_FWD_TO_USER,
    kvm_smccc_filter,
)
from elvisor.log import Log

log = Log(__name__)

SMCCC_RET_NOT_SUPPORTED = 0xFFFF_FFFF_FFFF_FFFF  # -1
U64 = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class Hypercall:
    """An SMCCC call (HVC or SMC) the guest made, forwarded to a Python handler."""

    function_id: int
    args: tuple[int, ...]  # x1-x6
    conduit: str  # "hvc" or "smc"
    vcpu: int


HypercallHandler = Callable[[Hypercall], Sequence[int] | int | None]


class Registers(Protocol):
    """What a hypercall needs of a vCPU: its general-purpose registers (a kvm.fds.Vcpu)."""

    def get_one_reg(self, reg_id: int) -> int: ...

    def set_one_reg(self, reg_id: int, value: int) -> None: ...


class HypercallsUnsupported(UserError):
    pass


class HypercallTable:
    """The function-ID ranges forwarded to user space, and their handlers."""

    def __init__(self, vm_fd: VmFd) -> None:
        self._vm_fd = vm_fd
        self._ranges: list[tuple[int, int, HypercallHandler]] = []

    def supported(self) -> bool:
        return self._vm_fd.has_device_attr(KVM_ARM_VM_SMCCC_CTRL, KVM_ARM_VM_SMCCC_FILTER)

    def register(self, base: int, count: int, handler: HypercallHandler) -> None:
        """Forward the SMCCC function IDs [base, base + count) to `handler` (before the
        vCPUs first run: KVM takes no new filter after that)."""
        if not self.supported():
            raise HypercallsUnsupported(
                "this host's KVM cannot forward hypercalls to user space: it needs the SMCCC "
                "filter (KVM_ARM_VM_SMCCC_CTRL) of Linux 6.4 or newer"
            )
        if not (count > 0 and base >= 0 and base + count <= 1 << 32):
            raise ValueError(f"bad SMCCC function range: {count} from {base:#x}")
        rule = kvm_smccc_filter(base, count, KVM_SMCCC_FILTER_FWD_TO_USER)
        try:
            self._vm_fd.set_device_attr(KVM_ARM_VM_SMCCC_CTRL, KVM_ARM_VM_SMCCC_FILTER, rule)
        except KvmError as e:
            if e.errno == errno.EEXIST:
                raise ValueError(
                    f"SMCCC functions {base:#x}+{count} overlap calls KVM reserves "
                    "or a range already registered"
                ) from None
            raise
        self._ranges.append((base, count, handler))

    def serve(self, function_id: int, flags: int, vcpu: Registers, index: int) -> None:
        """Answer one call: the handler's results in x0-x3, NOT_SUPPORTED (-1) in x0 where
        no handler takes the call or the handler fails."""
        conduit = "smc" if flags & KVM_HYPERCALL_EXIT_SMC else "hvc"
        results: Sequence[int] | int | None = None
        for base, count, handler in self._ranges:
            if base <= function_id < base + count:
                args = tuple(vcpu.get_one_reg(regs.x(n)) for n in range(1, 7))
                try:
                    results = handler(Hypercall(function_id, args, conduit, index))
                except Exception:
                    log.exception("hypercall handler for %#x failed", function_id)
                break
        if results is None:
            results = [SMCCC_RET_NOT_SUPPORTED]
        elif isinstance(results, int):
            results = [results]
        for n, value in enumerate(list(results)[:4]):  # the guest sees x0-x3
            vcpu.set_one_reg(regs.x(n), int(value) & U64)
