"""Watching exits: `--trace exits` prints each one as it happens; `--stats` counts them, and
the time the VMM spent serving them, by reason and by device register, for a table at the
end (as `perf kvm stat` does for a whole host).

Both wrap a vCPU's exit handler (`exits.exit_handler`). With neither asked for, the vCPU
threads keep the bare handler: watching costs nothing when it is off.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TextIO

from elvisor.devices.bus import MmioBus
from elvisor.exits import (
    KVM_EXIT_MMIO,
    MMIO_RECORD,
    ExitHandler,
    ExitView,
    RunResult,
    exit_name,
)
from elvisor.kvm import ExitReason, SystemEvent

KVM_EXIT_HYPERCALL = ExitReason.KVM_EXIT_HYPERCALL.value
KVM_EXIT_SYSTEM_EVENT = ExitReason.KVM_EXIT_SYSTEM_EVENT.value


def short_name(reason: int) -> str:
    """KVM_EXIT_MMIO -> mmio: an exit reason as the trace and the table show it."""
    return exit_name(reason).removeprefix("KVM_EXIT_").lower()


class ExitWatch:
    """What `--trace exits` and `--stats` ask for, shared by the vCPUs of one VM."""

    def __init__(self, trace: TextIO | None = None, stats: bool = False) -> None:
        self.trace = trace
        self.stats = stats
        self._end = "\r\n" if trace is not None and _is_terminal(trace) else "\n"
        self._lock = threading.Lock()  # one line at a time, from any vCPU
        self._tables: list[dict[tuple[str, ...], list[int]]] = []  # each vCPU's [count, ns]

    @property
    def on(self) -> bool:
        return self.trace is not None or self.stats

    def wrap(self, handle: ExitHandler, view: ExitView, bus: MmioBus) -> ExitHandler:
        """`handle`, watched: each exit traced and/or counted with its time."""
        page, offset, data, index = view.page, view.mmio_offset, view.data, view.index
        unpack, describe, clock = MMIO_RECORD.unpack_from, bus.describe, time.perf_counter_ns
        table: dict[tuple[str, ...], list[int]] = {}
        with self._lock:
            self._tables.append(table)
        trace, stats = self.trace, self.stats

        def watched(reason: int) -> RunResult | None:
            if reason == KVM_EXIT_MMIO:  # (read before serving: the reply overwrites it)
                address, raw, size, is_write = unpack(page, offset)
            begin = clock()
            ending = handle(reason)
            spent = clock() - begin
            if reason == KVM_EXIT_MMIO:
                device, register = describe(address)
                access = "write" if is_write else "read"
                key: tuple[str, ...] = ("mmio", device, register, access)
                if trace is not None:
                    value = int.from_bytes(raw[:size] if is_write else data[:size], "little")
                    self._line(f"vcpu{index} mmio {device} {register} {access} {size} {value:#x}")
            else:
                key = (short_name(reason),)
                if trace is not None:
                    self._line(f"vcpu{index} {key[0]}{_detail(reason, view)}")
            if stats:
                counted = table.get(key)
                if counted is None:
                    table[key] = [1, spent]
                else:
                    counted[0] += 1
                    counted[1] += spent
            return ending

        return watched

    def _line(self, text: str) -> None:
        assert self.trace is not None
        with self._lock:
            self.trace.write(text + self._end)
            self.trace.flush()

    def counts(self) -> dict[tuple[str, ...], tuple[int, int]]:
        """(count, nanoseconds serving them) by exit: ("mmio", device, register, access) for
        MMIO, (reason,) for the others; every vCPU's together."""
        total: dict[tuple[str, ...], list[int]] = {}
        with self._lock:
            tables = list(self._tables)
        for table in tables:
            for key, (count, spent) in list(table.items()):
                into = total.setdefault(key, [0, 0])
                into[0] += count
                into[1] += spent
        return {key: (count, spent) for key, (count, spent) in total.items()}

    def table(self) -> str:
        """The `--stats` table: exits by reason, then MMIO exits by device register; the most
        frequent first, with the time spent serving them in the VMM."""
        counts = self.counts()
        by_reason: dict[str, list[int]] = {}
        for key, (count, spent) in counts.items():
            into = by_reason.setdefault(key[0], [0, 0])
            into[0] += count
            into[1] += spent
        total = sum(count for count, _ in by_reason.values()) or 1
        head = f"{'count':>10}{'share':>8}{'time (ms)':>11}{'mean (us)':>11}"
        lines = [f"{'exits by reason':<40}{head}"]
        for reason, (count, spent) in sorted(by_reason.items(), key=lambda kv: -kv[1][0]):
            lines.append(_row(reason, count, spent, total))
        registers = [(k, v) for k, v in counts.items() if k[0] == "mmio"]
        if registers:
            lines.append("MMIO exits by device and register")
            for key, (count, spent) in sorted(registers, key=lambda kv: -kv[1][0]):
                lines.append(_row(" ".join(key[1:]), count, spent, total))
        return "\n".join(lines)


def _row(what: str, count: int, spent: int, total: int) -> str:
    share = f"{100 * count / total:.1f}%"
    return f"  {what:<38}{count:>10}{share:>8}{spent / 1e6:>11.3f}{spent / 1e3 / count:>11.1f}"


def _detail(reason: int, view: ExitView) -> str:
    """What the trace adds to an exit other than MMIO."""
    if reason == KVM_EXIT_HYPERCALL:
        return f" {int(view.run.exit.hypercall.nr):#010x}"  # the SMCCC function ID
    if reason == KVM_EXIT_SYSTEM_EVENT:
        event = int(view.run.exit.system_event.type)
        try:
            return " " + SystemEvent(event).name.removeprefix("KVM_SYSTEM_EVENT_").lower()
        except ValueError:
            return f" {event}"
    return ""


def _is_terminal(stream: TextIO) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (OSError, ValueError):
        return False
