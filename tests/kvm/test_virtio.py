"""virtio devices with the default guest: disks (ext4 root, read-only, survival of SIGKILL),
the hvc0 console, user-mode networking, entropy; and a guest that writes garbage to them."""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest
from network import Server

PROMPT = rb"~ # "


@pytest.fixture
def rootfs(tmp_path):
    """A fresh ext4 root filesystem of the default guest (`elvisor rootfs`)."""
    path = tmp_path / "rootfs.ext4"
    subprocess.run([sys.executable, "-m", "elvisor", "rootfs", str(path)], check=True,
                   capture_output=True)  # fmt: skip
    return path


def debugfs(image, command: str) -> str:
    """`command` run by debugfs on the image, after e2fsck has replayed its journal (as the
    next mount would: debugfs itself reads only what is checkpointed)."""
    fsck = shutil.which("e2fsck") or "/sbin/e2fsck"
    done = subprocess.run([fsck, "-fy", str(image)], capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 1: fixed (the journal)
    tool = shutil.which("debugfs") or "/sbin/debugfs"
    done = subprocess.run([tool, "-R", command, str(image)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.every_host
def test_ext4_root_hvc0_console_and_user_networking(console_session, rootfs) -> None:
    """One boot, 2 vCPUs and most of the devices (every host profile boots Linux this once):
    root on virtio-blk, console on virtio-console, DHCP and
    TCP both ways over passt to the lab host (its gateway address is the host). (Ping over
    passt: test_net.py, on the default lab, whose passt answers it.)"""
    server = Server("127.0.0.1")
    guest = console_session(
        "--disk", str(rootfs), "--cmdline", "root=/dev/vda console=hvc0", "--console", "virtio",
        "--net", "user", "--cpus", "2",
    )  # fmt: skip
    guest.expect(rb"elvisor-guest: eth0 has 10\.0\.2\.15/24")  # the lab's address, by DHCP
    guest.expect(PROMPT)
    guest.send(
        "echo root=$(grep -v ^rootfs /proc/mounts | grep ' / ' | cut -d' ' -f1,3) tty=$(tty)"
    )
    guest.expect(rb"root=/dev/vda ext4 tty=/dev/hvc0\r?\n")
    guest.send("echo cpus=$(nproc) online=$(cat /sys/devices/system/cpu/online)")
    guest.expect(rb"cpus=2 online=0-1\r?\n")
    server.check(guest, "10.0.2.2")
    guest.send("echo written-in-the-guest > /hello.txt && sync && poweroff")
    assert guest.wait() == 0
    assert debugfs(rootfs, "cat /hello.txt") == "written-in-the-guest\n"


def test_disks_in_order_serials_read_only_in_use_hwrng_and_sigkill(console_session, elvisor_run,
                                                                   tmp_path) -> None:  # fmt: skip
    """Disks and entropy; and what the guest wrote and fsync'ed survives elvisor's SIGKILL."""
    first, second = tmp_path / "first.img", tmp_path / "second.img"
    first.write_bytes(bytes(1 << 20))
    second.write_bytes(os.urandom(2 << 20))
    before = hashlib.sha256(second.read_bytes()).hexdigest()
    guest = console_session("--disk", str(first), "--disk", f"{second},ro")
    guest.expect(PROMPT)
    guest.send("for d in vda vdb; do echo $d=$(cat /sys/block/$d/serial),$(cat /sys/block/$d/size),"
               "$(cat /sys/block/$d/ro); done")  # fmt: skip
    guest.expect(rb"vda=first.img,2048,0\r?\n")
    guest.expect(rb"vdb=second.img,4096,1\r?\n")
    guest.send("blockdev --setrw /dev/vdb")  # past the kernel's own check: the device refuses
    guest.send("dd if=/dev/zero of=/dev/vdb bs=4096 count=1 oflag=direct 2>/dev/null; echo dd=$?")
    guest.expect(rb"dd=1\r?\n")
    guest.send("echo read=$(dd if=/dev/vdb bs=4096 count=1 2>/dev/null | wc -c)")
    guest.expect(rb"read=4096\r?\n")
    guest.send("echo rng=$(cat /sys/class/misc/hw_random/rng_current)"
               " bytes=$(head -c 64 /dev/hwrng | od -An -v -tx1 | wc -w)")  # fmt: skip
    guest.expect(rb"rng=virtio_rng.0 bytes=64\r?\n")
    in_use = elvisor_run("--disk", str(first))
    assert in_use.returncode == 2
    assert b"in use by another program" in in_use.stderr
    synced = b"".join(b"%d\n" % n for n in range(1, 5001))  # through the guest's page cache
    guest.send("seq 1 5000 | dd of=/dev/vda conv=fsync 2>/dev/null && echo synced-$((1+1))")
    guest.expect(rb"synced-2\r?\n")
    guest.proc.kill()
    guest.proc.wait()
    assert first.read_bytes()[: len(synced)] == synced
    assert hashlib.sha256(second.read_bytes()).hexdigest() == before


@pytest.mark.every_host
def test_guest_writing_garbage_to_every_virtio_register_and_queue(guest, elvisor_run, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    result = elvisor_run(
        "--binary", str(guest("virtio_garbage.elf")), "--disk", str(disk), "--net", "user",
        "--console", "virtio", "--vsock", "cid=43",  # (vsock: queues the kernel serves)
    )  # fmt: skip
    assert b"virtio garbage: done" in result.stdout, result.stderr.decode()[-2000:]
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"Traceback" not in result.stderr
    assert disk.stat().st_size == 1 << 20
