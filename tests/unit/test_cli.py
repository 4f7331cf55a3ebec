"""What a user sees on bad input: one line, exit status 2, no traceback."""

import subprocess
import sys

import pytest

from elvisor.errors import UserError
from elvisor.kvm import fds, probe
from elvisor.units import parse_size


def elvisor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "elvisor", *args],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lab", "run"], "lab run needs a command"),
        (["lab", "run", "--"], "lab run needs a command"),
        (["lab", "run", "--memory", "lots", "--", "true"], "'lots' is not a size"),
        (["lab", "run", "--memory", "64M", "--", "true"], "--memory must be between"),
        (["lab", "run", "--profile", "rpi3", "--", "true"], "invalid choice: 'rpi3'"),
        (["lab", "run", "--cpus", "x", "--", "true"], "invalid int value: 'x'"),
        (["lab", "shell"], "lab shell needs a terminal"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_status_2(args: list[str], message: str) -> None:
    result = elvisor(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("elvisor: error: ") and message in lines[0]


def test_kvm_info_on_a_non_arm64_host_points_to_the_lab() -> None:
    with pytest.raises(UserError) as caught:
        probe.open_kvm(machine="x86_64")
    assert "this host is x86_64" in str(caught.value)
    assert "elvisor lab run -- elvisor kvm info" in str(caught.value)


def test_missing_dev_kvm(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        probe.open_kvm(str(tmp_path / "kvm"), machine="aarch64")


def test_unreadable_dev_kvm(monkeypatch) -> None:
    def denied(path: str, flags: int) -> int:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(fds.os, "open", denied)  # as for a user outside the kvm group
    with pytest.raises(UserError, match="join the kvm group"):
        probe.open_kvm("/dev/kvm", machine="aarch64")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512M", 512 << 20),
        ("2G", 2 << 30),
        ("2g", 2 << 30),
        ("64K", 64 << 10),
        ("100", 100),
        ("1GiB", 1 << 30),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_default_unit() -> None:
    assert parse_size("2048", default_unit="M") == 2048 << 20
