"""What `elvisor kvm info` and `elvisor doctor` report about the lab host."""

import json
import mmap
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.every_host

ELVISOR = [sys.executable, "-m", "elvisor"]


def dt_gic_version() -> int:
    """The GIC version of the host, from its device tree (as QEMU's `virt` describes it)."""
    for node in Path("/proc/device-tree").glob("intc@*"):
        compatible = (node / "compatible").read_bytes().split(b"\0")
        if b"arm,gic-v3" in compatible:
            return 3
        if b"arm,cortex-a15-gic" in compatible or b"arm,gic-400" in compatible:
            return 2
    raise AssertionError("no GIC in the host's device tree")


@pytest.fixture(scope="module")
def info() -> dict:
    out = subprocess.run(
        [*ELVISOR, "kvm", "info", "--json"], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_api_version_is_12(info: dict) -> None:
    assert info["api_version"] == 12


def test_vgic_matches_the_hosts_gic(info: dict) -> None:
    gic = dt_gic_version()
    if expected := os.environ.get("ELVISOR_EXPECT_GIC"):
        assert gic == int(expected), "the lab's machine does not have the profile's GIC"
    assert info["vgic_v3"] is (gic == 3)
    assert info["vgic_v2"] is (gic == 2)


def test_page_size(info: dict) -> None:
    assert info["page_size"] == mmap.PAGESIZE
    if expected := os.environ.get("ELVISOR_EXPECT_PAGE_SIZE"):
        assert info["page_size"] == int(expected)


def test_kvm_mode(info: dict) -> None:
    assert info["kvm_mode"] in ("VHE", "nVHE", "protected")
    if expected := os.environ.get("ELVISOR_EXPECT_KVM_MODE"):
        assert info["kvm_mode"] == expected


def test_essential_capabilities(info: dict) -> None:
    caps = info["capabilities"]
    for name in ("user memory", "one-reg", "PSCI 0.2", "irqfd", "ioeventfd", "device control"):
        assert caps[name], name
    assert info["max_vcpus"] >= 2
    assert info["ipa_bits"] >= 40


def test_human_readable_info_names_the_same_facts(info: dict) -> None:
    out = subprocess.run([*ELVISOR, "kvm", "info"], capture_output=True, text=True, check=True)
    assert "API version" in out.stdout and "12" in out.stdout
    assert f"{info['ipa_bits']} bits" in out.stdout


def test_doctor_says_the_host_can_run_guests() -> None:
    out = subprocess.run([*ELVISOR, "doctor"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "This host can run elvisor guests" in out.stdout
    assert f"GICv{dt_gic_version()}" in out.stdout
