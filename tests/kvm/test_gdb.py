"""`elvisor run --gdb`: Debian's gdb (tests/kvm/gdb_tool.py) drives a bare-metal guest in
batch mode: a breakpoint at a label, registers and memory read and written, steps, and the
guest going on to its power-off."""

import re
import subprocess
import sys

import gdb_tool

ELVISOR = [sys.executable, "-m", "elvisor", "run"]


def start_under_gdb(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    """elvisor waiting for gdb (--gdb-wait) on a free port; the port it printed."""
    proc = subprocess.Popen([*ELVISOR, *args, "--gdb", "0", "--gdb-wait"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stderr is not None
    said = ""
    while line := proc.stderr.readline().decode():  # (the line that says where, at once)
        said += line
        if match := re.search(r"target remote 127\.0\.0\.1:(\d+)", line):
            return proc, int(match.group(1))
    raise AssertionError(f"elvisor did not say where gdb connects:\n{said}")


def gdb(port: int, elf: str, *commands: str) -> str:
    argv = [*gdb_tool.command(), "-ex", "set pagination off", "-ex", "set confirm off",
            "-ex", f"file {elf}", "-ex", f"target remote 127.0.0.1:{port}"]  # fmt: skip
    for command in commands:
        argv += ["-ex", command]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    return result.stdout + result.stderr


def test_breakpoint_registers_memory_steps_and_power_off(guest) -> None:
    elf = str(guest("hello.elf"))
    proc, port = start_under_gdb("--binary", elf)
    try:
        out = gdb(port, elf,
                  "info registers pc",  # held before the first instruction: the entry
                  "break puts", "continue",
                  "info registers pc", "x/s $x9",
                  "set var $x11 = 0x1234", "p/x $x11",
                  "set {unsigned int}0x40100000 = 0xfeedf00d", "x/wx 0x40100000",
                  "stepi", "stepi", "info registers pc",
                  "info threads", "delete", "continue")  # fmt: skip
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert re.search(r"pc\s+0x40080000", out), out  # (hello.elf's entry)
    assert re.search(r"Breakpoint 1, 0x[0-9a-f]+ in puts \(\)", out), out
    assert '"hello from the guest\\n"' in out, out
    assert "0x1234" in out and "0xfeedf00d" in out, out
    assert re.search(r"\* 1\s+Thread 1", out), out
    assert "exited normally" in out, out
    assert proc.returncode == 0, stderr
    assert stdout == b"hello from the guest\n"


def test_watchpoint_and_hardware_breakpoint(guest) -> None:
    elf = str(guest("store.elf"))
    proc, port = start_under_gdb("--binary", elf)
    try:
        out = gdb(port, elf,
                  "watch *(unsigned long *)0x40100000", "continue",
                  "p/x *(unsigned long *)0x40100000", "delete",
                  "hbreak power_off", "continue", "info registers pc", "delete",
                  "continue")  # fmt: skip
        proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert re.search(r"Hardware watchpoint 1: \*\(unsigned long \*\)0x40100000", out), out
    assert re.search(r"New value = 6840346605343588079", out), out  # 0x5eedcafef00dbeef
    assert "0x5eedcafef00dbeef" in out, out
    assert re.search(r"Hardware assisted breakpoint 2 at 0x[0-9a-f]+", out), out
    assert re.search(r"Breakpoint 2, 0x[0-9a-f]+ in power_off \(\)", out), out
    assert re.search(r"pc\s+0x[0-9a-f]+\s+0x[0-9a-f]+ <power_off>", out), out
    assert "exited normally" in out, out
    assert proc.returncode == 0
