"""The default guest (Debian's kernel, busybox initramfs) booted by `elvisor run`."""

import re
import shutil
import subprocess
import time

import pytest

PROMPT = rb"~ # "


def test_boots_with_1_cpu_with_the_hosts_time_and_its_devices(console_session) -> None:
    """(2 vCPUs: test_virtio.py, on every host.)"""
    guest = console_session("--cpus", "1", "--pmu")
    guest.expect(rb"elvisor-guest: init reached")
    guest.expect(PROMPT)
    guest.send("echo cpus=$(nproc) online=$(cat /sys/devices/system/cpu/online)")
    guest.expect(rb"cpus=1 online=0\r?\n")  # whole lines: output comes in pieces
    guest.send("echo now=$(date +%s)")
    guest_now = int(guest.expect(rb"now=(\d+)\r?\n").group(1))
    assert abs(guest_now - time.time()) < 60
    guest.send(
        "echo rtc=$(cat /sys/class/rtc/rtc0/name) uarts=$(grep -c PL011 /proc/tty/driver/ttyAMA)"
    )
    match = guest.expect(rb"rtc=([^\r\n]*) uarts=(\d+)\r?\n")
    assert b"pl031" in match.group(1) and int(match.group(2)) == 1
    guest.send("echo pmus=$(ls /sys/bus/event_source/devices | grep -c armv8)")  # --pmu
    assert int(guest.expect(rb"pmus=(\d+)\r?\n").group(1)) >= 1
    guest.send("exit")  # the console shell's end is the guest's end
    assert guest.wait() == 0


def test_piped_commands_run_and_poweroff_ends_with_status_0(elvisor_run) -> None:
    """Commands piped in before the guest has booted are not lost (the PL011 holds them)."""
    script = b"echo piped-$((6 * 7))\nuname -m\ncat /proc/cmdline\npoweroff\n"
    result = elvisor_run(stdin=script)
    assert result.returncode == 0, result.stderr
    out = result.stdout.replace(b"\r\n", b"\n")
    assert b"\npiped-42\n" in out
    assert b"\naarch64\n" in out
    assert b"console=ttyAMA0" in out
    assert b"[6n" not in out  # the shell's cursor query: nobody here to answer it


def test_device_tree_to_an_unwritable_path_is_one_line(elvisor_run) -> None:
    result = elvisor_run("--dump-dtb", "/nonexistent-dir/guest.dtb")
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        "elvisor: error: cannot write device tree /nonexistent-dir/guest.dtb: "
        "No such file or directory"
    ]


@pytest.mark.every_host
def test_device_tree_passes_dtc_without_warnings(elvisor_run, tmp_path) -> None:
    dtb = tmp_path / "guest.dtb"
    result = elvisor_run("--cpus", "2", "--dump-dtb", str(dtb))
    assert result.returncode == 0, result.stderr
    dtc = shutil.which("dtc")
    assert dtc, "dtc is part of the lab"
    out = subprocess.run(
        [dtc, "-I", "dtb", "-O", "dts", str(dtb)], capture_output=True, text=True, check=True
    )
    assert out.stderr == ""
    assert re.search(r"cpu@1 \{", out.stdout)
    assert re.search(r'compatible = "arm,pl011(\\0|", ")arm,primecell"', out.stdout)
