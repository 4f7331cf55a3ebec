"""Hostile bare-metal guests under `elvisor run`: garbage in every register of the virtual GIC,
random hypercalls and PSCI calls, CPU_ON racing SYSTEM_RESET. The guest may lose; elvisor
ends in order, never with a traceback."""

import subprocess

import pytest


def offered_gic_versions() -> list[int]:
    info = subprocess.run(
        ["elvisor", "kvm", "info", "--json"], capture_output=True, text=True, check=True
    ).stdout
    return [v for v in (2, 3) if f'"vgic_v{v}": true' in info]


@pytest.mark.every_host
def test_garbage_in_every_gic_register(guest, elvisor_run) -> None:
    """Distributor (ITARGETSR, GICD_SGIR on GICv2), every redistributor, random SGIs. (The
    guest's SGI with RS = 1 is KVM's to route: its vGIC reports no range selector support,
    GICD_TYPER.RSS = 0, which makes RS RES0, and KVM treats it as 0.)"""
    for version in offered_gic_versions():
        result = elvisor_run(
            "--binary", str(guest("gic_garbage.elf")), "--cpus", "2", "--gic", str(version)
        )
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert result.stdout.endswith(b"gic garbage: survived\n")
        assert b"Traceback" not in result.stderr


def test_random_hypercalls_and_psci_racing_a_reset(guest, elvisor_run) -> None:
    """HVC #0, HVC #1 and SMC with random function IDs and arguments, CPU_ON with random MPIDRs
    and entry points, then CPU_ON racing SYSTEM_RESET (which ends the run: --no-reboot)."""
    result = elvisor_run("--binary", str(guest("psci_garbage.elf")), "--cpus", "3", "--no-reboot")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout.startswith(
        b"psci garbage: calling\npsci garbage: calls done\npsci garbage: racing a reset\n"
    )
    assert b"stale" not in result.stdout
    assert b"Traceback" not in result.stderr
