"""virtio-net with the default guest on TAP devices, with the kernel's vhost-net and with the
Python data plane, and on passt (as on every host in test_virtio.py); and virtio-vsock with
vhost-vsock. Transfers are checked end to end by their SHA-256."""

import fcntl
import hashlib
import os
import socket
import struct
import subprocess
import threading
from contextlib import ExitStack, contextmanager

from network import PAYLOAD, Server, ping

PROMPT = rb"~ # "
GUEST_CID, VSOCK_PORT = 42, 5000

TUNSETIFF, TUNSETPERSIST = 0x400454CA, 0x400454CB
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000


@contextmanager
def persistent_tap(name: str, address: str):
    """A TAP device on the lab host with an address, there before the VM and after it."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)
    subprocess.run(["ip", "addr", "add", address, "dev", name], check=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    try:
        yield
    finally:
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
        fcntl.ioctl(fd, TUNSETPERSIST, 0)
        os.close(fd)


def tools_disk(tmp_path, guest) -> str:
    """An ext4 disk with the test's guest programs (the default guest has no vsock tools)."""
    tree = tmp_path / "tools"
    tree.mkdir()
    (tree / "vsock_echo").write_bytes(guest("linux/vsock_echo").read_bytes())
    (tree / "vsock_echo").chmod(0o755)
    image = tmp_path / "tools.ext4"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(image), "4M"], check=True)
    return str(image)


def open_files(pid: int) -> list[str]:
    fds = f"/proc/{pid}/fd"
    return [os.readlink(f"{fds}/{fd}") for fd in os.listdir(fds)]


def vsock_echo(data: bytes) -> bytes:
    """What the guest's vsock_echo sends back for `data` (sent while the answer comes back:
    neither side can hold all of it)."""
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as s:
        s.settimeout(120)
        s.connect((GUEST_CID, VSOCK_PORT))

        def send() -> None:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        answer = bytearray()
        while chunk := s.recv(65536):
            answer += chunk
        sender.join()
    return bytes(answer)


def test_vhost_net_python_plane_passt_and_vsock(console_session, elvisor_run, guest,
                                                tmp_path) -> None:  # fmt: skip
    """One guest, three ports: eth0 on a TAP with vhost-net, eth1 on a TAP with the Python
    data plane, eth2 on passt; and vsock. Ping and TCP both ways on each."""
    with ExitStack() as stack:
        stack.enter_context(persistent_tap("eltap0", "192.168.77.1/24"))
        stack.enter_context(persistent_tap("eltap1", "192.168.78.1/24"))
        session = console_session(
            "--net", "tap=eltap0,mac=52:54:00:aa:bb:01",
            "--net", "tap=eltap1,mac=52:54:00:aa:bb:02,vhost=off",
            "--net", "user", "--vsock", f"cid={GUEST_CID}", "--disk", tools_disk(tmp_path, guest),
        )  # fmt: skip
        stack.callback(session.close)  # (before the TAPs go)
        session.expect(rb"elvisor-guest: eth2 has 10\.0\.2\.15/24")  # passt, by DHCP
        session.expect(PROMPT)
        assert "/dev/vhost-net" in open_files(session.proc.pid)
        assert "/dev/vhost-vsock" in open_files(session.proc.pid)

        session.send(f"mkdir /mnt && mount /dev/vda /mnt && /mnt/vsock_echo {VSOCK_PORT} &")
        session.expect(rb"listening on port %d" % VSOCK_PORT)
        data = os.urandom(PAYLOAD)
        assert hashlib.sha256(vsock_echo(data)).digest() == hashlib.sha256(data).digest()
        second = elvisor_run("--vsock", f"cid={GUEST_CID}")
        assert second.returncode == 2
        assert f"vsock cid={GUEST_CID} is in use by another VM".encode() in second.stderr

        ping(session, "10.0.2.2")  # the lab host, through passt
        session.send("killall udhcpc; cat /sys/class/net/eth0/address /sys/class/net/eth1/address")
        session.expect(rb"52:54:00:aa:bb:01\r?\n52:54:00:aa:bb:02\r?\n")
        for port, subnet in (("eth0", "192.168.77"), ("eth1", "192.168.78")):
            session.send(f"ip addr add {subnet}.2/24 dev {port}")
            ping(session, f"{subnet}.1")
            host_ping = subprocess.run(["ping", "-c", "2", "-W", "5", f"{subnet}.2"],
                                       capture_output=True)  # fmt: skip
            assert host_ping.returncode == 0, host_ping.stdout
            Server(f"{subnet}.1").check(session, f"{subnet}.1")
        session.send("poweroff")
        assert session.wait() == 0
