"""The vCPU exit handler, fed made-up kvm_run pages: what each exit does and how one ends a VM.

Offsets and values are literal, from include/uapi/linux/kvm.h (struct kvm_run: exit_reason
at 8, the exit union at 32; KVM_EXIT_*; KVM_SYSTEM_EVENT_*), not from the code under test.
"""

import ctypes
import struct

import pytest

from elvisor.devices.bus import MmioBus, Placement
from elvisor.exits import REASONS, ExitView, Outcome, counted, exit_handler, handle_exit
from elvisor.hypercalls import Hypercall, HypercallTable

KVM_EXIT_HYPERCALL, KVM_EXIT_MMIO, KVM_EXIT_FAIL_ENTRY = 3, 6, 9
KVM_EXIT_INTR, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_SYSTEM_EVENT = 10, 17, 24
SHUTDOWN, RESET, CRASH, WAKEUP = 1, 2, 3, 4
EXIT = 32  # the union in struct kvm_run
REG_X0 = 0x6030_0000_0010_0000  # KVM_REG_ARM64 | U64 | CORE | regs[0]; x(n) is + 2n


class FakeVcpu:
    """General-purpose registers, as KVM_GET/SET_ONE_REG would give them."""

    def __init__(self) -> None:
        self.regs: dict[int, int] = {REG_X0 + 2 * n: 0x100 + n for n in range(31)}

    def get_one_reg(self, reg_id: int) -> int:
        return self.regs.get(reg_id, 0)

    def set_one_reg(self, reg_id: int, value: int) -> None:
        self.regs[reg_id] = value


class FakeVmFd:
    """The SMCCC filter of a VM fd, accepting every range."""

    def has_device_attr(self, group: int, attr: int) -> bool:
        return True

    def set_device_attr(self, group: int, attr: int, value: object = None) -> None:
        pass


class Register:
    def __init__(self, value: int = 0) -> None:
        self.value = value
        self.writes: list[tuple[int, int, int]] = []

    def mmio_read(self, offset: int, size: int) -> int:
        return self.value

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


@pytest.fixture
def page():
    """(the exit view, its raw bytes) of a made-up kvm_run page, for vCPU 1."""
    vcpu = FakeVcpu()
    view = ExitView.made_up(vcpu, index=1)
    raw = (ctypes.c_char * ctypes.sizeof(view.run)).from_buffer(view.run)
    return view, raw


def mmio(raw, address: int, size: int, is_write: bool, data: bytes = b"") -> None:
    struct.pack_into("<Q8sIB", raw, EXIT, address, data.ljust(8, b"\0"), size, is_write)


def test_mmio_write_reaches_the_device_at_its_offset(page) -> None:
    view, raw = page
    bus, device = MmioBus(), Register()
    bus.add(Placement("pl011", 0x0900_0000, 0x1000, 1), device)
    mmio(raw, 0x0900_0000, 1, True, b"h\xff\xff\xff")
    assert handle_exit(KVM_EXIT_MMIO, view, bus, HypercallTable(FakeVmFd())) is None
    mmio(raw, 0x0900_0024, 4, True, bytes.fromhex("78563412ffffffff"))
    handle_exit(KVM_EXIT_MMIO, view, bus, HypercallTable(FakeVmFd()))
    assert device.writes == [(0, 1, 0x68), (0x24, 4, 0x1234_5678)]


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_mmio_read_answers_in_the_page_masked_to_its_width(page, size: int) -> None:
    view, raw = page
    bus = MmioBus()
    bus.add(Placement("pl011", 0x0900_0000, 0x1000, 1), Register(0x1122_3344_5566_7788_99))
    mmio(raw, 0x0900_0018, size, False, b"\xee" * 8)
    assert handle_exit(KVM_EXIT_MMIO, view, bus, HypercallTable(FakeVmFd())) is None
    data = bytes(raw[EXIT + 8 : EXIT + 16])
    expected = (0x1122_3344_5566_7788_99 & ((1 << 8 * size) - 1)).to_bytes(size, "little")
    assert data == expected + b"\xee" * (8 - size)


def test_mmio_read_of_a_width_that_is_no_access_leaves_the_page(page) -> None:
    view, raw = page
    mmio(raw, 0x0900_0018, 3, False, b"\xee" * 8)
    assert handle_exit(KVM_EXIT_MMIO, view, MmioBus(), HypercallTable(FakeVmFd())) is None
    assert bytes(raw[EXIT + 8 : EXIT + 16]) == b"\xee" * 8


def test_unmapped_mmio_reads_zero(page) -> None:
    view, raw = page
    mmio(raw, 0x1234_0000, 4, False, b"\xee" * 8)
    assert handle_exit(KVM_EXIT_MMIO, view, MmioBus(), HypercallTable(FakeVmFd())) is None
    assert bytes(raw[EXIT + 8 : EXIT + 12]) == b"\0" * 4


@pytest.mark.parametrize(
    ("event", "outcome", "status"),
    [(SHUTDOWN, Outcome.POWEROFF, 0), (RESET, Outcome.RESET, 0), (CRASH, Outcome.FAILED, 1)],
)
def test_system_events_end_the_vm(page, event: int, outcome: Outcome, status: int) -> None:
    view, raw = page
    struct.pack_into("<I", raw, EXIT, event)
    result = handle_exit(KVM_EXIT_SYSTEM_EVENT, view, MmioBus(), HypercallTable(FakeVmFd()))
    assert result is not None and result.outcome is outcome and result.exit_status == status
    if outcome is Outcome.FAILED:
        assert result.message.startswith("vCPU 1: the guest reported a crash")
        assert "X0 =0000000000000100" in result.message  # the registers, for the report


def test_other_system_events_and_interrupted_runs_go_on(page) -> None:
    view, raw = page
    struct.pack_into("<I", raw, EXIT, WAKEUP)
    table = HypercallTable(FakeVmFd())
    assert handle_exit(KVM_EXIT_SYSTEM_EVENT, view, MmioBus(), table) is None
    assert handle_exit(KVM_EXIT_INTR, view, MmioBus(), table) is None


def test_hypercall_goes_to_its_handler_and_answers_in_x0_to_x3(page) -> None:
    view, raw = page
    calls: list[Hypercall] = []
    table = HypercallTable(FakeVmFd())
    table.register(0xC600_1000, 16, lambda call: (calls.append(call), [7, 8, 9, 10, 11])[1])
    struct.pack_into("<Q", raw, EXIT, 0xC600_1003)  # nr
    struct.pack_into("<Q", raw, EXIT + 64, 1)  # flags: KVM_HYPERCALL_EXIT_SMC
    assert handle_exit(KVM_EXIT_HYPERCALL, view, MmioBus(), table) is None
    assert calls == [Hypercall(0xC600_1003, (0x101, 0x102, 0x103, 0x104, 0x105, 0x106), "smc", 1)]
    vcpu = view.vcpu
    assert [vcpu.get_one_reg(REG_X0 + 2 * n) for n in range(5)] == [7, 8, 9, 10, 0x104]


def test_hypercall_nobody_answers_or_a_failing_handler_returns_not_supported(page) -> None:
    view, raw = page
    table = HypercallTable(FakeVmFd())
    table.register(0xC600_1000, 1, lambda call: 1 // 0)
    for nr in (0xC600_1000, 0xC600_2000):
        view.vcpu.set_one_reg(REG_X0, 0)
        struct.pack_into("<Q", raw, EXIT, nr)
        assert handle_exit(KVM_EXIT_HYPERCALL, view, MmioBus(), table) is None
        assert view.vcpu.get_one_reg(REG_X0) == 0xFFFF_FFFF_FFFF_FFFF


@pytest.mark.parametrize(
    ("reason", "detail"),
    [
        (KVM_EXIT_FAIL_ENTRY, "KVM_EXIT_FAIL_ENTRY (hardware entry failure reason 0x2a)"),
        (KVM_EXIT_INTERNAL_ERROR, "KVM_EXIT_INTERNAL_ERROR (suberror 42)"),
        (99, "exit reason 99"),
    ],
)
def test_unexpected_exits_end_the_vm_with_the_registers(page, reason: int, detail: str) -> None:
    view, raw = page
    struct.pack_into("<I", raw, 8, reason)
    struct.pack_into("<Q", raw, EXIT, 42)
    result = handle_exit(reason, view, MmioBus(), HypercallTable(FakeVmFd()))
    assert result is not None and result.outcome is Outcome.FAILED and result.exit_status == 1
    assert result.message.startswith(f"vCPU 1: unexpected exit {detail}\n")
    assert "X30=000000000000011e" in result.message


def test_one_handler_counts_each_exit_by_reason(page) -> None:
    """The handler a vCPU thread keeps counts what it serves; the counts name the exits."""
    view, raw = page
    bus = MmioBus()
    device = Register(7)
    bus.add(Placement("reg", 0x1000, 0x100), device)
    handle = exit_handler(view, bus, HypercallTable(FakeVmFd()))
    for _ in range(3):
        mmio(raw, 0x1004, 4, is_write=False)
        assert handle(KVM_EXIT_MMIO) is None
    mmio(raw, 0x1008, 1, is_write=True, data=b"\x41")
    assert handle(KVM_EXIT_MMIO) is None
    assert handle(KVM_EXIT_INTR) is None
    assert handle(1000) is not None  # an exit KVM does not have: counted as the last reason
    assert device.writes == [(8, 1, 0x41)]
    assert counted(view.counts) == {
        "KVM_EXIT_MMIO": 4,
        "KVM_EXIT_INTR": 1,
        f"exit reason {REASONS - 1}": 1,
    }
    assert bus.counts() == {"reg@1000": (3, 1)}
