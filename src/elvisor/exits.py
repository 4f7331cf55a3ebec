"""What a vCPU's exit from KVM_RUN means, and what is done about it.

`exit_handler` is the whole of it, a plain function over the vCPU's kvm_run page (an
`ExitView`), the MMIO bus and the hypercall table, which gives the vCPU's handler: it counts
and serves each exit and returns None for the vCPU to run on, or a `RunResult` when the exit
ends the VM. The unit tests feed it made-up kvm_run pages; the vCPU threads of `Vm` feed it
KVM's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
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


REASONS = 64  # exit reasons counted one by one (KVM has about 40); the rest count as the last
MMIO_RECORD = struct.Struct("<Q8sIB")  # kvm_run.mmio: phys_addr, data[8], len, is_write


class ExitView:
    """A vCPU's kvm_run page as the exit handler reads it, and its exits counted by reason.

    The MMIO record is read with one `struct` unpack from the page, not ctypes fields."""

    def __init__(self, run: kvm_run, index: int, vcpu: Registers, counts: list[int]) -> None:
        self.run = run
        self.page = memoryview(run).cast("B")  # (kept while the vCPU lives: see kvm.fds)
        self.mmio_offset = KVM_RUN_MMIO_DATA_OFFSET - 8
        self.data = self.page[KVM_RUN_MMIO_DATA_OFFSET : KVM_RUN_MMIO_DATA_OFFSET + 8]
        self.index = index
        self.vcpu = vcpu
        self.counts = counts  # by reason, REASONS long (see `counted`)
        self.on_debug: Callable[[ExitView], None] | None = None  # a debugger's, for its exits

    @classmethod
    def made_up(cls, vcpu: Registers, index: int = 0) -> ExitView:
        """A view of a kvm_run page of our own, for tests."""
        return cls(kvm_run(), index, vcpu, [0] * REASONS)

    def release(self) -> None:
        """Drop the views of the page, before it is unmapped."""
        self.data.release()
        self.page.release()


ExitHandler = Callable[[int], "RunResult | None"]


def exit_handler(view: ExitView, bus: MmioBus, hypercalls: HypercallTable) -> ExitHandler:
    """The exit path of one vCPU: `handle(reason)` counts and serves one exit of reason
    `reason` (kvm_run.exit_reason) and returns None for the vCPU to run on, or a RunResult
    when the exit ends the VM. What it needs is bound once here, not looked up per exit."""
    counts, page, offset, data = view.counts, view.page, view.mmio_offset, view.data
    unpack, read, write = MMIO_RECORD.unpack_from, bus.read, bus.write

    def handle(reason: int) -> RunResult | None:
        counts[reason if reason < REASONS else REASONS - 1] += 1
        if reason == KVM_EXIT_MMIO:
            address, raw, size, is_write = unpack(page, offset)
            if is_write:
                write(address, size, int.from_bytes(raw[:size], "little"))
            elif size in MASKS:
                data[:size] = (read(address, size) & MASKS[size]).to_bytes(size, "little")
            return None
        if reason == KVM_EXIT_INTR:
            return None
        return _other_exit(reason, view, hypercalls)

    return handle


def handle_exit(
    reason: int, view: ExitView, bus: MmioBus, hypercalls: HypercallTable
) -> RunResult | None:
    """Serve one exit through `exit_handler` (for tests: the vCPU threads keep theirs)."""
    return exit_handler(view, bus, hypercalls)(reason)


def _other_exit(reason: int, view: ExitView, hypercalls: HypercallTable) -> RunResult | None:
    if reason == ExitReason.KVM_EXIT_DEBUG and view.on_debug is not None:
        view.on_debug(view)  # (a breakpoint, a step or a watchpoint, for the debugger)
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


def counted(counts: list[int]) -> dict[str, int]:
    """Exit counts (as an ExitView keeps them) by the exits' names."""
    return {exit_name(r): n for r, n in enumerate(counts) if n}


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
