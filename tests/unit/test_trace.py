"""--trace exits and --stats, over made-up kvm_run pages: the lines the trace prints and the
table the stats give, through the same handler the vCPU threads keep."""

import ctypes
import io
import struct

from elvisor.devices.bus import MmioBus, Placement
from elvisor.devices.pl011 import Pl011
from elvisor.devices.pl031 import Pl031
from elvisor.exits import ExitView, exit_handler
from elvisor.hypercalls import HypercallTable
from elvisor.trace import ExitWatch

KVM_EXIT_HYPERCALL, KVM_EXIT_MMIO, KVM_EXIT_INTR, KVM_EXIT_SYSTEM_EVENT = 3, 6, 10, 24
EXIT = 32  # the union in struct kvm_run
UART, RTC = 0x0900_0000, 0x0901_0000


class Line:
    def set_level(self, level: bool) -> None:
        pass


class NoRegisters:
    def mmio_read(self, offset: int, size: int) -> int:
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        pass


class FakeVmFd:
    def has_device_attr(self, group: int, attr: int) -> bool:
        return True


class FakeVcpu:
    def get_one_reg(self, reg_id: int) -> int:
        return 0

    def set_one_reg(self, reg_id: int, value: int) -> None:
        pass


def machine(watch: ExitWatch, index: int = 0):
    """A vCPU's watched handler over a bus with a PL011, a PL031 and two unnamed devices."""
    out: list[bytes] = []
    bus = MmioBus()
    bus.add(Placement("pl011", UART, 0x1000, 1), Pl011(Line(), out.append))
    bus.add(Placement("pl031", RTC, 0x1000, 2), Pl031(Line(), clock=lambda: 1000.0))
    bus.add(Placement("thing", 0x1000_0000, 0x100), NoRegisters())
    bus.add(Placement("thing", 0x1000_1000, 0x100), NoRegisters())
    view = ExitView.made_up(FakeVcpu(), index)
    raw = (ctypes.c_char * ctypes.sizeof(view.run)).from_buffer(view.run)
    handle = watch.wrap(exit_handler(view, bus, HypercallTable(FakeVmFd())), view, bus)

    def mmio(address: int, size: int, is_write: bool, value: int = 0):
        data = value.to_bytes(8, "little")
        struct.pack_into("<Q8sIB", raw, EXIT, address, data, size, is_write)
        return handle(KVM_EXIT_MMIO)

    return handle, mmio, raw, out


def test_trace_prints_each_exit_as_it_happens() -> None:
    trace = io.StringIO()
    watch = ExitWatch(trace)
    handle, mmio, raw, out = machine(watch, index=1)
    for byte in b"hi":
        mmio(UART + 0x18, 4, is_write=False)  # UARTFR: room to send?
        mmio(UART, 1, is_write=True, value=byte)
    mmio(RTC, 4, is_write=False)
    mmio(0x1000_1004, 2, is_write=True, value=0xBEEF)
    mmio(0x2000_0000, 4, is_write=False)
    struct.pack_into("<Q", raw, EXIT, 0x8400_0008)  # hypercall nr: PSCI SYSTEM_OFF
    handle(KVM_EXIT_HYPERCALL)
    struct.pack_into("<I", raw, EXIT, 1)  # KVM_SYSTEM_EVENT_SHUTDOWN
    assert handle(KVM_EXIT_SYSTEM_EVENT) is not None  # (it still ends the VM)
    handle(KVM_EXIT_INTR)
    assert out == [b"h", b"i"]
    assert trace.getvalue().splitlines() == [
        "vcpu1 mmio pl011 UARTFR read 4 0x90",
        "vcpu1 mmio pl011 UARTDR write 1 0x68",
        "vcpu1 mmio pl011 UARTFR read 4 0x90",
        "vcpu1 mmio pl011 UARTDR write 1 0x69",
        "vcpu1 mmio pl031 RTCDR read 4 0x3e8",
        "vcpu1 mmio thing@10001000 0x4 write 2 0xbeef",
        "vcpu1 mmio unmapped 0x20000000 read 4 0x0",
        "vcpu1 hypercall 0x84000008",
        "vcpu1 system_event shutdown",
        "vcpu1 intr",
    ]
    assert not watch.stats and watch.counts() == {}  # (the trace alone counts nothing)


def test_stats_count_exits_by_reason_and_register_over_every_vcpu() -> None:
    watch = ExitWatch(stats=True)
    _, mmio0, _, _ = machine(watch, index=0)
    handle1, mmio1, _, _ = machine(watch, index=1)
    for mmio in (mmio0, mmio1):
        for byte in b"abc":
            mmio(UART, 1, is_write=True, value=byte)
        mmio(RTC, 4, is_write=False)
    handle1(KVM_EXIT_INTR)
    counts = {key: count for key, (count, _) in watch.counts().items()}
    assert counts == {
        ("mmio", "pl011", "UARTDR", "write"): 6,
        ("mmio", "pl031", "RTCDR", "read"): 2,
        ("intr",): 1,
    }
    assert all(spent > 0 for _, spent in watch.counts().values())
    rows = [line.split() for line in watch.table().splitlines()]
    assert rows[0][:3] == ["exits", "by", "reason"]
    assert rows[1][:3] == ["mmio", "8", "88.9%"] and rows[2][:3] == ["intr", "1", "11.1%"]
    assert rows[3][:3] == ["MMIO", "exits", "by"]
    assert rows[4][:5] == ["pl011", "UARTDR", "write", "6", "66.7%"]
    assert rows[5][:5] == ["pl031", "RTCDR", "read", "2", "22.2%"]


def test_a_watch_asked_for_nothing_is_off() -> None:
    assert not ExitWatch().on
    assert ExitWatch(io.StringIO()).on and ExitWatch(stats=True).on
