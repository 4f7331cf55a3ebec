"""virtio-net with the default guest: user-mode networking through passt, and a TAP device
with the Python data plane. Transfers are checked end to end by their SHA-256."""

import fcntl
import hashlib
import os
import socket
import struct
import subprocess
import threading
from contextlib import contextmanager

import pytest

PROMPT = rb"~ # "
PAYLOAD = 2 << 20  # bytes each way


class Server:
    """A TCP server on the lab host: sends `data` to its first client, hashes what the
    second one sends."""

    def __init__(self, address: str) -> None:
        self.data = os.urandom(PAYLOAD)
        self.listener = socket.create_server((address, 0))
        self.port = self.listener.getsockname()[1]
        self.received = hashlib.sha256()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with self.listener:
            client, _ = self.listener.accept()
            with client:
                client.sendall(self.data)
            client, _ = self.listener.accept()
            with client:
                while chunk := client.recv(65536):
                    self.received.update(chunk)

    def check(self, guest, host_address: str) -> None:
        """The guest fetches the data, then sends its own; both hashes must match."""
        guest.send(f"nc {host_address} {self.port} | sha256sum")
        got = guest.expect(rb"([0-9a-f]{64})  -\r?\n").group(1).decode()
        assert got == hashlib.sha256(self.data).hexdigest()
        guest.send(
            f"head -c {PAYLOAD} /dev/urandom > /tmp/up && sha256sum /tmp/up"
            f" && nc {host_address} {self.port} < /tmp/up && echo sent-up"
        )
        sent = guest.expect(rb"([0-9a-f]{64})  /tmp/up\r?\n").group(1).decode()
        guest.expect(rb"sent-up\r?\n")
        self.thread.join(120)
        assert self.received.hexdigest() == sent


def ping(guest, address: str) -> None:
    guest.send(f"ping -c 2 -W 5 {address} >/dev/null && echo ping-ok-$((40+2))")
    guest.expect(rb"ping-ok-42\r?\n")


@pytest.mark.every_host
def test_user_networking_dhcp_ping_and_tcp(console_session) -> None:
    server = Server("127.0.0.1")  # passt maps the gateway's address to the host's loopback
    guest = console_session("--net", "user")
    guest.expect(rb"elvisor-guest: eth0 has 10\.0\.2\.15/24")  # the lab's own address, by DHCP
    guest.expect(PROMPT)
    ping(guest, "10.0.2.2")
    server.check(guest, "10.0.2.2")
    guest.send("poweroff")
    assert guest.wait() == 0


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


def test_tap_python_data_plane_ping_and_tcp(console_session) -> None:
    with persistent_tap("eltap0", "192.168.77.1/24"):
        server = Server("192.168.77.1")
        guest = console_session("--net", "tap=eltap0,mac=52:54:00:aa:bb:01")
        guest.expect(PROMPT)
        guest.send(
            "killall udhcpc; ip addr add 192.168.77.2/24 dev eth0; cat /sys/class/net/eth0/address"
        )
        guest.expect(rb"52:54:00:aa:bb:01\r?\n")
        ping(guest, "192.168.77.1")
        host_ping = subprocess.run(["ping", "-c", "2", "-W", "5", "192.168.77.2"],
                                   capture_output=True)  # fmt: skip
        assert host_ping.returncode == 0, host_ping.stdout
        server.check(guest, "192.168.77.1")
        guest.send("poweroff")
        assert guest.wait() == 0
