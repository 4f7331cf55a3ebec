"""Snapshots in the lab: a VM paused, written to two files, its process killed, and made again
in a new process that goes on from where it was; and snapshots that must be refused."""

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import time

import pytest
from firecracker_client import Firecracker

from elvisor.console import Console
from elvisor.snapshot import SnapshotError
from elvisor.vm import Vm

PROMPT = rb"~ # "
COUNTERS = 0x0010_0000  # counter.S's, as an offset into the memory file (RAM starts at 1 GiB)
GUEST_CID, VSOCK_PORT = 47, 5004
WAIT = 300.0  # bound against a hung guest, not a timing assertion


def ctl(sock, *command: str) -> str:
    result = subprocess.run(["elvisor", "ctl", str(sock), *command], capture_output=True,
                            text=True, timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def counters(directory) -> tuple[int, int]:
    with open(directory / "memory", "rb") as f:
        f.seek(COUNTERS)
        return struct.unpack("<QQ", f.read(16))


def kill(session) -> None:
    session.proc.send_signal(signal.SIGKILL)
    session.proc.wait(60)


def snapshot_create(fc: Firecracker, directory) -> None:
    status, answer = fc.call("PUT", "/snapshot/create", {
        "snapshot_path": str(directory / "state.json"),
        "mem_file_path": str(directory / "memory"),
    })  # fmt: skip
    assert status == 204, answer


@pytest.mark.every_host
def test_a_counting_guest_goes_on_from_its_snapshot_in_a_new_process(
    console_session, guest, tmp_path
) -> None:
    """(Through the API socket: elvisor's own processes would compete for the lab's CPUs
    with the two spinning vCPUs.)"""
    sock, first, second = tmp_path / "api.sock", tmp_path / "first", tmp_path / "second"
    vm = console_session("--binary", str(guest("counter.elf")), "--cpus", "2",
                         "--api-sock", str(sock))  # fmt: skip
    vm.expect(rb"counting\n")
    fc = Firecracker(str(sock))
    fc.wait_for_socket()
    fc.patch_vm("Paused")
    ctl(sock, "snapshot", str(first))  # (paused, it stays paused)
    assert fc.describe_instance()["state"] == "Paused"
    at_snapshot = counters(first)
    assert min(at_snapshot) > 0, at_snapshot  # both vCPUs had counted
    kill(vm)

    # a fresh `firecracker` process loads it, as a Firecracker client would
    sock = tmp_path / "restored.sock"  # (the killed process left its socket behind)
    restored = console_session("--api-sock", str(sock), command="firecracker")
    fc = Firecracker(str(sock))
    fc.wait_for_socket()
    status, _ = fc.call("PUT", "/snapshot/load", {
        "snapshot_path": str(first / "state.json"),
        "mem_backend": {"backend_type": "File", "backend_path": str(first / "memory")},
        "resume_vm": True,
    })  # fmt: skip
    assert status == 204
    assert fc.describe_instance()["state"] == "Running"
    status, answer = fc.call("PUT", "/snapshot/load", {"snapshot_path": "x", "mem_file_path": "y"})
    assert status == 400 and "only on a fresh process" in answer["fault_message"]
    time.sleep(0.5)
    fc.patch_vm("Paused")
    snapshot_create(fc, second)
    later = counters(second)
    assert later[0] > at_snapshot[0] and later[1] > at_snapshot[1], (at_snapshot, later)
    fc.create_sync_action("InstanceStop")
    assert restored.wait() == 0
    assert restored.output == b"", "the restored guest started again instead of going on"


def rewrite(state_path, change) -> None:
    """Change a state file's contents, and its checksum with them (a well-formed file)."""
    document = json.loads(state_path.read_text())
    change(document["body"])
    text = json.dumps(document["body"], sort_keys=True)
    document["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    state_path.write_text(json.dumps(document))


@pytest.mark.snapshot_host
def test_snapshots_that_cannot_be_restored_are_refused_with_one_line(
    console_session, elvisor_run, guest, tmp_path
) -> None:
    """Each refusal through `Vm.restore` (as `elvisor run --restore` does it, without a
    process each), and two through the command line: one line, status 2."""
    sock, good = tmp_path / "api.sock", tmp_path / "good"
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    vm = console_session("--binary", str(guest("counter.elf")), "--disk", str(disk),
                         "--api-sock", str(sock))  # fmt: skip
    vm.expect(rb"counting\n")
    fc = Firecracker(str(sock))
    fc.wait_for_socket()
    fc.patch_vm("Paused")
    snapshot_create(fc, good)
    kill(vm)
    state = (good / "state.json").read_bytes()
    info = subprocess.run(["elvisor", "kvm", "info", "--json"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    body = json.loads(state)["body"]
    other_gic = 5 - body["machine"]["gic"]

    cases = {
        "corrupt": (lambda p: p.write_bytes(state.replace(b'"mp_state": 0', b'"mp_state": 1', 1)),
                    "is corrupt: its contents do not match their checksum"),
        "truncated": (lambda p: p.write_bytes(state[: len(state) // 2]),
                      "is not an elvisor snapshot, or it is truncated"),
        "version": (lambda p: rewrite(p, lambda b: b.update(version=99)),
                    "is a snapshot of format version 99; this elvisor reads version 1"),
        "page size": (lambda p: rewrite(p, lambda b: b["host"].update(page_size=65536)),
                      "was taken on a host with 64 KiB pages"),
        "registers": (lambda p: rewrite(p, lambda b: b["vcpus"][0].update(regs=[[1, 2]])),
                      "its state cannot be put back"),
        "gic": (lambda p: rewrite(p, lambda b: b["machine"].update(gic=other_gic)),
                f"is of a VM with a GICv{other_gic}, which this host's KVM cannot give"
                if f'"vgic_v{other_gic}": true' not in info else "its state cannot be put back"),
    }  # fmt: skip
    for name, (damage, message) in cases.items():
        broken = tmp_path / name
        broken.mkdir()
        os.link(good / "memory", broken / "memory")
        (broken / "state.json").write_bytes(state)
        damage(broken / "state.json")
        with pytest.raises(SnapshotError) as caught:
            Vm.restore(broken, Console(None, lambda b: None))
        assert message in str(caught.value), name
        assert "\n" not in str(caught.value)
        if name in ("corrupt", "gic"):
            result = elvisor_run("--restore", str(broken))
            lines = result.stderr.decode().splitlines()
            assert result.returncode == 2 and len(lines) == 1, (name, result.stderr)
            assert message in lines[0], (name, lines[0])

    disk.write_bytes(bytes(1 << 20))  # the disk changed after the snapshot
    with pytest.raises(SnapshotError, match="changed after the snapshot was taken"):
        Vm.restore(good, Console(None, lambda b: None))
    disk.unlink()
    with pytest.raises(SnapshotError, match="is missing"):
        Vm.restore(good, Console(None, lambda b: None))
    with pytest.raises(SnapshotError, match="cannot read the snapshot"):
        Vm.restore(tmp_path / "nowhere", Console(None, lambda b: None))


def debugfs(image, command: str) -> str:
    return subprocess.run(["debugfs", "-R", command, str(image)], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip


@pytest.mark.snapshot_host
def test_a_linux_guest_goes_on_after_its_process_was_killed(
    console_session, guest, tmp_path
) -> None:
    """The shell, a counter, a written-but-unsynced file on ext4, a vsock listener: all there
    after the snapshot is restored in a new process; and the disk takes new writes."""
    tree, disk = tmp_path / "tree", tmp_path / "data.ext4"
    tree.mkdir()
    (tree / "vsock_echo").write_bytes(guest("linux/vsock_echo").read_bytes())
    (tree / "vsock_echo").chmod(0o755)
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(disk), "8M"], check=True)
    sock, snap = tmp_path / "api.sock", tmp_path / "snap"
    vm = console_session("--cpus", "2", "--memory", "256M", "--disk", str(disk),
                         "--vsock", f"cid={GUEST_CID}", "--api-sock", str(sock))  # fmt: skip
    vm.expect(PROMPT)
    vm.send(f"mkdir /mnt && mount /dev/vda /mnt && /mnt/vsock_echo {VSOCK_PORT} &")
    vm.expect(rb"listening on port %d" % VSOCK_PORT)
    vm.send("(i=0; while :; do i=$((i+1)); echo $i > /tmp/count; usleep 50000; done) &")
    vm.send("echo written-not-synced > /mnt/note.txt; echo count=$(cat /tmp/count)")
    before = int(vm.expect(rb"count=(\d+)\r?\n").group(1))
    ctl(sock, "pause")
    ctl(sock, "snapshot", str(snap))  # (stays paused: it was paused)
    kill(vm)

    restored = console_session("--restore", str(snap))
    restored.send("echo answer-$((6*7)) count=$(cat /tmp/count)")
    after = int(restored.expect(rb"answer-42 count=(\d+)\r?\n").group(1))
    assert after >= before
    restored.send("sleep 1; echo count=$(cat /tmp/count) note=$(cat /mnt/note.txt)")
    match = restored.expect(rb"count=(\d+) note=([^\r\n]*)\r?\n")
    assert int(match.group(1)) > after and match.group(2) == b"written-not-synced"
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as s:
        s.settimeout(120)
        s.connect((GUEST_CID, VSOCK_PORT))
        s.sendall(b"still listening")
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == b"still listening"
    restored.send("echo after-restore > /mnt/new.txt; sync; poweroff")
    assert restored.wait() == 0
    assert debugfs(disk, "cat /note.txt") == "written-not-synced\n"
    assert debugfs(disk, "cat /new.txt") == "after-restore\n"
