"""Host profiles: the arm64 hosts elvisor's users have, as QEMU machines for the lab."""

from __future__ import annotations

from dataclasses import dataclass

from elvisor.errors import UserError

SUITES = ("trixie", "bookworm")  # the Debian releases a lab host can run
DEFAULT_SUITE = "trixie"
CPUS = ("max", "cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1")


@dataclass(frozen=True)
class Profile:
    name: str
    cpu: str
    gic: int
    page_kib: int
    summary: str


PROFILES = {
    p.name: p
    for p in (
        Profile("max", "max", 3, 4, "QEMU's most capable CPU, GICv3 (the default)"),
        Profile("server", "neoverse-n1", 3, 4, "an arm64 server: Neoverse-N1, GICv3"),
        Profile("rpi4", "cortex-a72", 2, 4, "Raspberry Pi 4: Cortex-A72, GICv2"),
        Profile("rpi5", "cortex-a76", 2, 16, "Raspberry Pi 5: Cortex-A76, GICv2, 16 KiB pages"),
    )
}
DEFAULT_PROFILE = "max"


@dataclass(frozen=True)
class LabMachine:
    """What QEMU is asked to emulate, and which kernel flavour boots on it."""

    cpu: str
    gic: int
    cpus: int
    memory_mib: int
    flavour: str


def lab_machine(
    profile: str = DEFAULT_PROFILE,
    cpu: str | None = None,
    gic: int | None = None,
    cpus: int = 2,
    memory_mib: int = 2048,
) -> LabMachine:
    """The machine of a profile, with the user's overrides; every bad value caught here."""
    if profile not in PROFILES:
        raise UserError(f"unknown lab profile {profile!r}: choose one of {', '.join(PROFILES)}")
    chosen = PROFILES[profile]
    cpu = cpu or chosen.cpu
    if cpu not in CPUS:
        raise UserError(f"unknown lab CPU {cpu!r}: choose one of {', '.join(CPUS)}")
    gic = gic or chosen.gic
    if gic not in (2, 3):
        raise UserError(f"--gic must be 2 or 3, not {gic}")
    if not 1 <= cpus <= 8:
        raise UserError(f"--cpus must be between 1 and 8 for the lab, not {cpus}")
    if not 512 <= memory_mib <= 16384:
        raise UserError(f"--memory must be between 512M and 16G for the lab, not {memory_mib}M")
    flavour = "arm64-16k" if chosen.page_kib == 16 else "arm64"
    return LabMachine(cpu, gic, cpus, memory_mib, flavour)
