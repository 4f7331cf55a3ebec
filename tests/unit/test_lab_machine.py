"""Host profiles, the QEMU command line and the script the lab's init runs."""

import subprocess
import sys
from pathlib import Path

import pytest

from elvisor.errors import UserError
from elvisor.lab import qemu
from elvisor.lab.image import LabImage
from elvisor.lab.profiles import lab_machine
from elvisor.lab.qemu import Share, qemu_argv
from elvisor.lab.session import guest_script

IMAGE = LabImage(Path("/cache/lab"), "trixie", "arm64", "6.12", "3.13")


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize(
    ("profile", "cpu", "gic", "flavour"),
    [
        ("max", "max,pauth-impdef=on", "3", "arm64"),
        ("server", "neoverse-n1", "3", "arm64"),
        ("rpi4", "cortex-a72", "2", "arm64"),
        ("rpi5", "cortex-a76", "2", "arm64-16k"),
    ],
)
def test_profiles(profile: str, cpu: str, gic: str, flavour: str) -> None:
    machine = lab_machine(profile)
    assert machine.flavour == flavour
    argv = qemu_argv("qemu", machine, IMAGE, "console=ttyAMA0", [])
    assert option(argv, "-cpu") == cpu
    assert option(argv, "-machine") == f"virt,virtualization=on,gic-version={gic}"


def test_overrides() -> None:
    machine = lab_machine("rpi4", cpu="cortex-a53", gic=3, cpus=4, memory_mib=4096)
    argv = qemu_argv("qemu", machine, IMAGE, "x", [])
    assert option(argv, "-cpu") == "cortex-a53"
    assert option(argv, "-smp") == "4" and option(argv, "-m") == "4096M"
    assert "gic-version=3" in option(argv, "-machine")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"profile": "rpi3"}, "unknown lab profile 'rpi3'"),
        ({"cpu": "cortex-m0"}, "unknown lab CPU"),
        ({"gic": 4}, "--gic must be 2 or 3"),
        ({"cpus": 0}, "--cpus must be between 1 and 8"),
        ({"memory_mib": 100}, "--memory must be between 512M and 16G"),
    ],
)
def test_bad_machines(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        lab_machine(**kwargs)


def test_share_paths_with_commas_are_escaped() -> None:
    argv = qemu_argv("qemu", lab_machine(), IMAGE, "x", [Share(Path("/a,b"), "t", True)])
    assert option(argv, "-virtfs") == (
        "local,path=/a,,b,mount_tag=t,security_model=none,multidevs=remap,readonly=on"
    )


def test_command_line_too_long() -> None:
    with pytest.raises(UserError, match="too long for the lab's kernel command line"):
        qemu_argv("qemu", lab_machine(), IMAGE, "x" * 3000, [])


def test_guest_script_runs_the_exact_command(tmp_path) -> None:
    """The script, run by a host shell (no shares), starts the command with exact arguments."""
    code = "import os, sys; print(sys.argv[1:], os.getcwd(), os.environ['FOO'])"
    argv = [sys.executable, "-c", code, "a b", "it's", "$HOME", "*"]
    script = guest_script(argv, [], tmp_path, {"FOO": "x y"}, "n0nce", None)
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True, cwd="/")
    lines = out.stdout.split("\n")
    assert lines[0].startswith("\x1eelvisor-lab-start-n0nce ")
    assert lines[1] == f"['a b', \"it's\", '$HOME', '*'] {tmp_path} x y"


def test_guest_script_mounts_shares_and_sets_the_environment() -> None:
    share = Share(Path("/work/my checkout"), "elvisor-share")
    script = guest_script(
        ["true"],
        [share],
        Path("/work/my checkout/tests"),
        {"PYTHONPATH": "/work/my checkout/src"},
        "n",
        (40, 120),
    )
    assert (
        "mkdir -p '/work/my checkout' && mount -t 9p -o "
        "trans=virtio,version=9p2000.L,msize=512000,cache=loose elvisor-share '/work/my checkout'"
    ) in script
    assert "export PYTHONPATH='/work/my checkout/src'" in script
    assert "cd '/work/my checkout/tests'" in script
    assert "stty rows 40 cols 120" in script
    assert script.rstrip().endswith("exec true")


def test_no_qemu_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setattr(qemu.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="apt-get install --no-install-recommends qemu-system-arm"):
        qemu.qemu_binary()
