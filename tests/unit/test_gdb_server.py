"""The stub's stop replies, from the syndrome (ESR) of a vCPU's debug exit, and --gdb's
address. (The whole stub runs against KVM in tests/kvm/test_gdb.py.)"""

import queue

import pytest

from elvisor.errors import UserError
from elvisor.gdb.server import Debugger, parse_address
from elvisor.gdb.session import Session
from elvisor.gdb.target import Watch
from elvisor.vm import State


class FakeVm:
    state = State.RUNNING
    paused = 0

    def pause(self) -> None:
        self.paused += 1
        self.state = State.PAUSED


class FakeTarget:
    def __init__(self, watches: list[Watch]) -> None:
        self.watches = watches

    def watch_at(self, far: int) -> Watch | None:
        return next((w for w in self.watches if w.address & ~7 == far & ~7), None)


def stop_reply(esr_class: int, far: int = 0, vcpu: int = 1) -> tuple[bytes | None, FakeVm]:
    debugger = object.__new__(Debugger)  # (no socket, no VM: only the reply is looked at)
    debugger.vm = FakeVm()  # type: ignore[assignment]
    debugger.target = FakeTarget([Watch("read", 0x4010_0000, 8)])  # type: ignore[assignment]
    debugger._events = queue.SimpleQueue()
    debugger._events.put((vcpu, esr_class << 26, far))
    debugger._events.put((0, 0x3C << 26, 0))  # (another vCPU at the same moment: dropped)
    reply = debugger._stopped(Session(None))  # type: ignore[arg-type]
    assert debugger._events.empty()
    return reply, debugger.vm  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("esr_class", "far", "reply"),
    [
        (0x3C, 0, b"T05thread:2;swbreak:;"),  # BRK
        (0x31, 0, b"T05thread:2;hwbreak:;"),  # hardware breakpoint, same EL
        (0x33, 0, b"T05thread:2;"),  # software step
        (0x35, 0x4010_0004, b"T05thread:2;rwatch:40100004;"),  # a read watchpoint
        (0x34, 0x5000_0000, b"T05thread:2;watch:50000000;"),
    ],
)
def test_each_debug_exit_stops_the_vm_with_its_reply(esr_class: int, far: int, reply: bytes):
    got, vm = stop_reply(esr_class, far)
    assert got == reply
    assert vm.paused == 1  # all-stop: the whole VM


def test_gdb_address() -> None:
    assert parse_address("1234") == ("127.0.0.1", 1234)
    assert parse_address("0.0.0.0:0") == ("0.0.0.0", 0)
    for bad in ("", "host:", "70000", "x:y"):
        with pytest.raises(UserError, match="give \\[HOST:\\]PORT"):
            parse_address(bad)
