"""What a vCPU's exit from KVM_RUN means, and what is done about it.

`handle_exit` is the whole of it, a plain function over the vCPU's kvm_run page (an
`ExitView`), the MMIO bus and the hypercall table: it serves the exit and returns None for
the vCPU to run on, or a `RunResult` when the exit ends the VM. The unit tests feed it
made-up kvm_run pages; the vCPU threads of `Vm` feed it KVM's.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from enum import Enum
from typing import Any

from elvisor.arch.arm64 import regs
from elvisor.devices.bus import MmioBus
from elvisor.hypercalls import HypercallTable, Registers
from elvisor.kvm import ExitReason, KvmError, SystemEvent
from elvisor.kvm.uapi import KVM_RUN_MMIO_DATA_OFFSET, kvm_run

KVM_EXIT_MMIO = ExitReason.KVM_EXIT_MMIO.value
KVM_EXIT_INTR = ExitReason.KVM_EXIT_INTR.value
MASKS = {size: (1 << 8 * size) - 1 for size in (1, 2, 4, 8)}


class Outcome(Enum):
    POWEROFF = "poweroff"  # PSCI SYSTEM_OFF
    RESET = "reset"  # PSCI SYSTEM_RESET
    QUIT = "quit"  # Ctrl-A x on the console
    STOPPED = "stopped"  # Vm.stop(), from the Python API or the API socket
    FAILED = "failed"  # the guest could not go on: see the message
    SIGNAL = "signal"  # SIGINT, SIGTERM or SIGHUP


@dataclass(frozen=True)
class RunResult:
    outcome: Outcome
    exit_status: int  # what `elvisor run` exits with
    message: str = ""


POWEROFF = RunResult(Outcome.POWEROFF, 0, "the guest powered off")
RESET = RunResult(Outcome.RESET, 0, "the guest reset")


class ExitView:
    """A vCPU's kvm_run page as the exit handler reads it: the structure, its MMIO record and
    the MMIO data bytes, each looked up once (per vCPU, not per exit)."""

    def __init__(self, run: kvm_run, index: int, vcpu: Registers) -> None:
        self.run = run
        self.mmio = run.exit.mmio
        data = (ctypes.c_uint8 * 8).from_buffer(run, KVM_RUN_MMIO_DATA_OFFSET)
        self.data = memoryview(data).cast("B")
        self.index = index
        self.vcpu = vcpu

    @classmethod
    def made_up(cls, vcpu: Registers, index: int = 0) -> ExitView:
        """A view of a kvm_run page of our own, for tests."""
        return cls(kvm_run(), index, vcpu)


def handle_exit(
    reason: int, view: ExitView, bus: MmioBus, hypercalls: HypercallTable
) -> RunResult | None:
    """Serve one exit of reason `reason` (kvm_run.exit_reason); a RunResult ends the VM."""
    if reason == KVM_EXIT_MMIO:
        mmio = view.mmio
        size = mmio.len
        if mmio.is_write:
            bus.write(mmio.phys_addr, size, int.from_bytes(view.data[:size], "little"))
        elif size in MASKS:
            value = bus.read(mmio.phys_addr, size) & MASKS[size]
            view.data[:size] = value.to_bytes(size, "little")
        return None
    if reason == KVM_EXIT_INTR:
        return None
    if reason == ExitReason.KVM_EXIT_SYSTEM_EVENT:
        return _system_event(view)
    if reason == ExitReason.KVM_EXIT_HYPERCALL:
        call = view.run.exit.hypercall
        hypercalls.serve(int(call.nr), int(call.flags), view.vcpu, view.index)
        return None
    return failure(view, f"unexpected exit {exit_name(reason)}{_exit_detail(view.run)}")


def _system_event(view: ExitView) -> RunResult | None:
    event = view.run.exit.system_event.type
    if event == SystemEvent.KVM_SYSTEM_EVENT_SHUTDOWN:
        return POWEROFF
    if event == SystemEvent.KVM_SYSTEM_EVENT_RESET:
        return RESET
    if event == SystemEvent.KVM_SYSTEM_EVENT_CRASH:
        return failure(view, "the guest reported a crash (PSCI SYSTEM_EVENT_CRASH)")
    return None  # (WAKEUP, SUSPEND: KVM carries on with the vCPU)


def failure(view: ExitView, what: str) -> RunResult:
    """The VM ends: vCPU `view.index` cannot go on, for the reason `what`."""
    message = f"vCPU {view.index}: {what}\n{dump_registers(view.vcpu)}"
    return RunResult(Outcome.FAILED, 1, message)


def exit_name(reason: int) -> str:
    try:
        return ExitReason(reason).name
    except ValueError:
        return f"exit reason {reason}"


def _exit_detail(run: Any) -> str:
    if run.exit_reason == ExitReason.KVM_EXIT_FAIL_ENTRY:
        reason = run.exit.fail_entry.hardware_entry_failure_reason
        return f" (hardware entry failure reason {reason:#x})"
    if run.exit_reason == ExitReason.KVM_EXIT_INTERNAL_ERROR:
        return f" (suberror {run.exit.internal.suberror})"
    return ""


def dump_registers(vcpu: Registers) -> str:
    """The vCPU's state for a failure report (registers KVM will not give are shown as ?)."""

    def read(reg: int) -> str:
        try:
            return f"{vcpu.get_one_reg(reg):016x}"
        except KvmError:
            return "?" * 16

    named = [
        ("PC", regs.PC),
        ("PSTATE", regs.PSTATE),
        ("SP_EL1", regs.SP_EL1),
        ("SP_EL0", regs.SP_EL0),
        ("ELR_EL1", regs.ELR_EL1),
        ("ESR_EL1", regs.ESR_EL1),
        ("FAR_EL1", regs.FAR_EL1),
        ("SCTLR_EL1", regs.SCTLR_EL1),
        ("VBAR_EL1", regs.VBAR_EL1),
    ]
    lines = [
        "  " + "  ".join(f"{n:>9}={read(r)}" for n, r in named[i : i + 3])
        for i in range(0, len(named), 3)
    ]
    gprs = [f"X{n:<2}={read(regs.x(n))}" for n in range(31)]
    lines += ["  " + "  ".join(gprs[i : i + 4]) for i in range(0, 31, 4)]
    return "\n".join(lines)
