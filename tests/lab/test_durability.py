"""Durability that proves something: power is cut under a guest that writes and syncs.

Killing elvisor leaves the lab's page cache, which would hide a missing fdatasync. Here the
disk image is a virtio disk of the lab itself (not 9p, not tmpfs): the default guest, under
`elvisor run --disk /dev/vda` in the lab, writes numbered records, each followed by fsync,
and says which it was told are safe; then the whole lab QEMU is killed, as a power cut would.
Every record the guest saw acknowledged must be in the image on the host."""

import os
import re
import secrets
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 60
ACKED_BEFORE_THE_CUT = 8
TIMEOUT = 900  # a hang guard: the lab boots, then a Linux guest inside it


def qemus_with(disk: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system-aarch64" in cmdline and str(disk).encode() in cmdline:
            found.append(int(proc.name))
    return found


@pytest.mark.usefixtures("no_leftovers")
def test_every_write_acknowledged_after_fsync_survives_a_power_cut(tmp_path) -> None:
    disk = tmp_path / "lab-disk.img"
    with disk.open("wb") as f:
        f.truncate(64 << 20)
    nonce = secrets.token_hex(6)
    script = ROOT / "build" / f"durability-{nonce}.sh"  # (in the checkout: the lab sees it)
    script.parent.mkdir(exist_ok=True)
    script.write_text(
        "i=1\n"
        f"while [ $i -le {RECORDS} ]; do\n"
        f"  printf 'elvisor-record %04d {nonce}\\n' $i |\n"
        "    dd of=/dev/vda bs=4096 seek=$i conv=notrunc,sync,fsync 2>/dev/null &&\n"
        "    echo acked-$i\n"
        "  i=$((i + 1))\n"
        "done\n"
        "sleep 600\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "elvisor", "lab", "run", "--disk", str(disk), "--",
         "sh", "-c", f"elvisor run --disk /dev/vda < {script}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    output = b""
    acked = 0
    try:
        deadline = time.monotonic() + TIMEOUT
        while acked < ACKED_BEFORE_THE_CUT:
            assert time.monotonic() < deadline, output.decode(errors="replace")[-3000:]
            if select.select([proc.stdout], [], [], 1)[0]:
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"the lab ended first:\n{output.decode(errors='replace')[-3000:]}"
                output += chunk
                acked = max([0, *map(int, re.findall(rb"acked-(\d+)", output))])
        (qemu,) = qemus_with(disk)
        os.kill(qemu, signal.SIGKILL)  # the power cut
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        script.unlink()
    image = disk.read_bytes()
    for i in range(1, acked + 1):
        record = image[4096 * i : 4096 * i + 64]
        assert record.startswith(f"elvisor-record {i:04d} {nonce}\n".encode()), (i, acked, record)
