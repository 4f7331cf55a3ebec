"""Bare-metal test guests (tests/guests/*.S) under `elvisor run` and the Python API."""

import os
import re
import struct
import subprocess

import pytest

from elvisor.config import VmConfig
from elvisor.console import Console
from elvisor.vm import HypercallsUnsupported, Outcome, Vm

FDT_MAGIC = 0xD00DFEED


@pytest.mark.every_host
def test_hello_elf(guest, elvisor_run) -> None:
    result = elvisor_run("--binary", str(guest("hello.elf")))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello from the guest\n"


def test_trace_shows_each_uart_write_and_stats_count_them(guest, elvisor_run, tmp_path) -> None:
    """--trace exits: one line per exit, the PL011 writes spelling the message; --stats: the
    table at the end counts them."""
    trace = tmp_path / "trace"
    result = elvisor_run("--binary", str(guest("hello.elf")), "--trace", "exits",
                         "--trace-file", str(trace), "--stats")  # fmt: skip
    assert result.returncode == 0, result.stderr
    message = b"hello from the guest\n"
    assert result.stdout == message
    lines = [line for line in trace.read_text().splitlines() if line != "vcpu0 intr"]
    writes = [f"vcpu0 mmio pl011 UARTDR write 1 {byte:#x}" for byte in message]
    assert lines == [*writes, "vcpu0 system_event shutdown"]
    table = [line.split() for line in result.stderr.decode().splitlines()]
    assert ["pl011", "UARTDR", "write", str(len(message))] in [row[:4] for row in table]
    assert ["mmio", str(len(message))] in [row[:2] for row in table]
    assert ["system_event", "1"] in [row[:2] for row in table]


def test_hello_raw_binary_at_its_load_address(guest, elvisor_run) -> None:
    for where in (["--load-addr", "0x40200000"], []):  # given; by default 512 KiB into RAM
        result = elvisor_run("--binary", str(guest("hello.bin")), *where)
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"hello from the guest\n"


@pytest.mark.every_host
def test_value_stored_by_the_guest_is_in_its_memory(guest) -> None:
    output = bytearray()
    with Vm(VmConfig(binary=guest("store.elf")), Console(None, output.extend)) as vm:
        result = vm.run()
        assert result.outcome is Outcome.POWEROFF and result.exit_status == 0
        value, dtb = struct.unpack("<QQ", vm.memory.read(0x4010_0000, 16))
        assert value == 0x5EED_CAFE_F00D_BEEF
        # x0 held the device tree's address at entry: the blob is there
        assert struct.unpack(">I", vm.memory.read(dtb, 4))[0] == FDT_MAGIC
        assert vm.memory.read(dtb, len(vm.dtb_blob)) == vm.dtb_blob


@pytest.mark.every_host
@pytest.mark.parametrize("cpus", [2, 4])
def test_secondary_cpu_started_with_psci_cpu_on(guest, elvisor_run, cpus: int) -> None:
    result = elvisor_run("--binary", str(guest("smp.elf")), "--cpus", str(cpus))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        b"cpu0: starting cpu1\ncpu1: up\ncpu1: context ok\ncpu0: cpu1 reported in\n"
    )


@pytest.mark.every_host
def test_both_gic_versions_the_host_offers(guest, elvisor_run) -> None:
    info = subprocess.run(
        ["elvisor", "kvm", "info", "--json"], capture_output=True, text=True, check=True
    ).stdout
    offered = [v for v in (2, 3) if f'"vgic_v{v}": true' in info]
    assert offered
    for version in offered:
        result = elvisor_run(
            "--binary", str(guest("smp.elf")), "--cpus", "2", "--gic", str(version)
        )
        assert result.returncode == 0, result.stderr
        assert b"cpu1: context ok" in result.stdout
    for version in {2, 3} - set(offered):
        result = elvisor_run("--binary", str(guest("hello.elf")), "--gic", str(version))
        assert result.returncode == 2
        assert f"cannot give guests a GICv{version}".encode() in result.stderr


@pytest.mark.every_host
def test_hypercalls_reach_python_handlers(guest) -> None:
    seen = []

    def handler(call):
        seen.append(call)
        text = f"{call.conduit}: {call.args[0]}+{call.args[1]}={call.args[0] + call.args[1]}\n"
        data = text.encode().ljust(32, b"\0")
        return struct.unpack("<4Q", data)

    output = bytearray()
    with Vm(VmConfig(binary=guest("hypercall.elf")), Console(None, output.extend)) as vm:
        major, minor = map(int, re.match(r"(\d+)\.(\d+)", os.uname().release).groups())
        if (major, minor) < (6, 4):  # bookworm's 6.1: the API says the host cannot
            with pytest.raises(HypercallsUnsupported, match="needs the SMCCC filter"):
                vm.register_hypercalls(0xC600_1000, 16, handler)
            return
        assert vm.hypercalls_supported()
        vm.register_hypercalls(0xC600_1000, 16, handler)
        assert vm.run().outcome is Outcome.POWEROFF
    assert bytes(output) == b"hvc: 20+22=42\nsmc: 7+6=13\n"
    assert [(c.function_id, c.conduit, c.vcpu) for c in seen] == [
        (0xC600_1000, "hvc", 0),
        (0xC600_1001, "smc", 0),
    ]
