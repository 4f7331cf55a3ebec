"""On an arm64 host with a usable /dev/kvm, `elvisor lab run` runs the command right there."""

import os
import subprocess
import sys


def test_lab_run_is_native_on_an_arm64_kvm_host() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "elvisor",
            "lab",
            "run",
            "--",
            "sh",
            "-c",
            'echo "native $ELVISOR_LAB $(cat /proc/sys/kernel/hostname)"; exit 5',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 5, result.stderr
    assert result.stdout == f"native native {os.uname().nodename}\n"


def test_native_timeout_is_124() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "elvisor", "lab", "run", "--timeout", "1", "--", "sleep", "30"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 124
    assert "timed out after 1 s" in result.stderr
