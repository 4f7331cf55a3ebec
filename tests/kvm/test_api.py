"""The control plane in the lab: Firecracker's API driving the default guest, `elvisor ctl`
driving `elvisor run --api-sock`, and VMs described in files."""

import json
import os
import re
import subprocess
import time

import pytest
from firecracker_client import Firecracker, FirecrackerError

from elvisor.images import default_guest

PROMPT = rb"~ # "


def ctl(sock, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["elvisor", "ctl", str(sock), *command],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def ticks(output: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"tick-(\d+)\r?\n", output)]


def test_firecracker_api_boots_pauses_resumes_and_stops_the_default_guest(
    console_session, tmp_path
) -> None:
    guest = default_guest()
    sock, metrics, log = tmp_path / "fc.sock", tmp_path / "metrics.json", tmp_path / "fc.log"
    vm = console_session("--api-sock", str(sock), "--id", "lab-vm", command="firecracker")
    fc = Firecracker(str(sock))
    fc.wait_for_socket()
    assert fc.describe_instance()["state"] == "Not started"
    fc.put_logger(str(log), "Info")
    fc.put_metrics(str(metrics))
    fc.put_machine_configuration(vcpu_count=1, mem_size_mib=256)
    fc.put_guest_boot_source(str(guest.kernel), str(guest.initrd), "console=ttyS0 quiet")
    fc.create_sync_action("InstanceStart")
    info = fc.describe_instance()
    assert (info["id"], info["state"]) == ("lab-vm", "Running")
    vm.expect(PROMPT)

    vm.send("for i in $(seq 150); do echo tick-$i; usleep 20000; done")
    vm.expect(rb"tick-5\r?\n")
    fc.patch_vm("Paused")
    assert fc.describe_instance()["state"] == "Paused"
    time.sleep(0.2)
    held = vm.drain()
    time.sleep(1.0)
    assert vm.drain() == held, "the guest went on while paused"
    last = ticks(held)[-1]
    fc.patch_vm("Resumed")
    vm.expect(rf"tick-{last + 2}\r?\n".encode())
    vm.expect(rb"tick-150\r?\n")
    assert ticks(vm.output) == list(range(1, 151)), "a tick was lost or doubled"

    # bad requests: the right status, a fault message, and the VM goes on
    for method, path, body, fault in [
        ("PUT", "/boot-source", {"kernel_image_path": "/k"}, "only accepted before"),
        ("PUT", "/actions", {"action_type": "InstanceStart"}, "already started"),
        ("PUT", "/actions", {"action_type": "SendCtrlAltDel"}, "x86"),
        ("GET", "/balloon", None, "no balloon device"),
        ("PATCH", "/vm", {"state": "Asleep"}, "Paused or Resumed"),
        ("PUT", "/machine-config", {"vcpu_count": "two"}, "only accepted before"),
    ]:
        status, answer = fc.call(method, path, body)
        assert status == 400 and fault in answer["fault_message"], (method, path, answer)
    with pytest.raises(FirecrackerError) as caught:
        fc.create_sync_action("Explode")
    assert caught.value.status == 400
    vm.send("echo answer-$((6*7)) $(nproc)")
    vm.expect(rb"answer-42 1\r?\n")

    fc.create_sync_action("FlushMetrics")
    line = json.loads(metrics.read_text().splitlines()[-1])
    assert line["state"] == "running" and len(line["vcpus"]) == 1
    assert line["vcpus"][0]["exits"]["KVM_EXIT_MMIO"] > 0
    assert line["mmio"]["pl011@9000000"]["writes"] > 0
    assert line["vcpus"][0]["guest_s"] >= 0 and line["utc_timestamp_ms"] > 0

    fc.create_sync_action("InstanceStop")
    assert vm.wait() == 0
    assert not sock.exists(), "the API socket was left behind"
    assert "microVM started" in log.read_text()


def test_ctl_drives_a_vm_run_with_an_api_socket(console_session, guest, tmp_path) -> None:
    sock = tmp_path / "api.sock"
    # (one vCPU: a lab CPU is left for the `elvisor ctl` processes)
    vm = console_session("--binary", str(guest("counter.elf")), "--api-sock", str(sock))
    vm.expect(rb"counting\n")
    deadline = time.monotonic() + 120
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    status = ctl(sock, "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout == "id=anonymous-instance state=Running vmm_version=0.1.0\n"
    assert ctl(sock, "pause").returncode == 0
    assert "state=Paused" in ctl(sock, "status").stdout
    refused = ctl(sock, "stop-the-world")
    assert refused.returncode == 2 and "invalid choice" in refused.stderr
    assert ctl(sock, "resume").returncode == 0
    assert "state=Running" in ctl(sock, "status").stdout
    assert ctl(sock, "stop").returncode == 0
    assert vm.wait() == 0
    assert not sock.exists()


def test_files_run_the_vm_the_command_line_would(guest, elvisor_run, tmp_path) -> None:
    """A TOML file (`run --config`) and Firecracker's JSON (`firecracker --config-file`)."""
    smp = str(guest("smp.elf"))
    vm_toml, vm_json = tmp_path / "vm.toml", tmp_path / "vm.json"
    vm_toml.write_text(f'kernel = "{smp}"\ncpus = 2\nmemory = 64\nrng = false\n')
    vm_json.write_text(json.dumps({
        "boot-source": {"kernel_image_path": smp},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 64},
        "drives": [],
    }))  # fmt: skip
    runs = [
        elvisor_run("--kernel", smp, "--cpus", "2", "--memory", "64M", "--no-rng"),
        elvisor_run("--config", str(vm_toml)),
        subprocess.run(["elvisor", "firecracker", "--no-api", "--config-file", str(vm_json)],
                       capture_output=True, timeout=300, stdin=subprocess.DEVNULL, check=False),
    ]  # fmt: skip
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert run.stdout == (
            b"cpu0: starting cpu1\ncpu1: up\ncpu1: context ok\ncpu0: cpu1 reported in\n"
        )
    assert sorted(os.listdir(tmp_path)) == ["vm.json", "vm.toml"]  # (no socket left behind)
