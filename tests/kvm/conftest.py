"""The KVM tests run on an arm64 host with /dev/kvm: inside the lab, or natively.

Where /dev/kvm should be and is not, they fail: they are never skipped.
"""

import os
import platform

import pytest


@pytest.fixture(scope="session", autouse=True)
def _require_kvm() -> None:
    assert platform.machine() in ("aarch64", "arm64"), (
        "tests/kvm run on an arm64 host: use `elvisor lab run -- python3 -m pytest tests/kvm`"
    )
    assert os.path.exists("/dev/kvm"), "/dev/kvm is missing on this arm64 host"
