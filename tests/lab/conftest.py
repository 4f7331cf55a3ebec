"""Tests of `elvisor lab` itself, run on the host: they boot the lab with QEMU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def lab_qemus() -> set[int]:
    """PIDs of the lab QEMU processes running now."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system-aarch64" in cmdline and b"elvisor_nonce=" in cmdline:
            pids.add(int(proc.name))
    return pids


@pytest.fixture(scope="session", autouse=True)
def built_lab() -> None:
    """Build the default lab once, before the tests time anything."""
    subprocess.run(
        [sys.executable, "-m", "elvisor", "lab", "build"], check=True, stdout=subprocess.DEVNULL
    )


@pytest.fixture
def no_leftovers():
    """Fails the test if a lab QEMU it started is still running afterwards."""
    before = lab_qemus()
    yield
    left = lab_qemus() - before
    assert not left, f"QEMU processes left behind: {sorted(left)}"


@pytest.fixture(name="lab_qemus")
def lab_qemus_fixture():
    return lab_qemus


@pytest.fixture(name="lab_run")
def lab_run_fixture():
    return lab_run


def lab_run(
    *args: str, env: dict | None = None, timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess[str]:
    """`elvisor lab run ARGS` from the checkout, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "elvisor", "lab", "run", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        **kwargs,
    )
