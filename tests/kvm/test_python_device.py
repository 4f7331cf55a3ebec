"""A device of the user's, in Python (docs/examples/counter.py), driven by a Linux guest from
its shell through /dev/mem; seen by --trace exits and --stats."""

import re
from pathlib import Path

COUNTER = Path(__file__).resolve().parents[2] / "docs" / "examples" / "counter.py"


def test_linux_drives_the_example_counter_from_userspace(elvisor_run, tmp_path) -> None:
    trace = tmp_path / "trace"
    commands = [
        "devmem 0x0b000000 32",  # ID
        "devmem 0x0b000004 32",  # COUNT: 100
        "devmem 0x0b000004 32",  # 101
        "devmem 0x0b000008 32 5",  # STEP = 5
        "devmem 0x0b000004 32",  # 102 (then 107)
        "devmem 0x0b00000c 32 1",  # IRQ raised
        "devmem 0x0b00000c 32",
        "cat /proc/device-tree/counter@b000000/compatible; echo",
        "poweroff -f",
    ]
    result = elvisor_run(
        "--device", f"{COUNTER}:Counter,start=100", "--trace", "exits", "--trace-file",
        str(trace), "--stats", stdin="\n".join(commands).encode() + b"\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode(errors="replace")
    answers = re.findall(r"^(0x[0-9A-F]{8})\r?$", out, re.M)
    assert answers == ["0x454C5653", "0x00000064", "0x00000065", "0x00000066", "0x00000001"], out
    assert "elvisor,example-counter" in out
    lines = trace.read_text().splitlines()
    assert "vcpu0 mmio counter ID read 4 0x454c5653" in lines
    assert "vcpu0 mmio counter STEP write 4 0x5" in lines
    table = [line.split()[:5] for line in result.stderr.decode().splitlines()]
    assert ["counter", "COUNT", "read", "3"] in [row[:4] for row in table]
    assert ["counter", "IRQ", "write", "1"] in [row[:4] for row in table]
