"""virtio-net with the default guest on a TAP device, with the Python data plane (user-mode
networking is in test_virtio.py). Transfers are checked end to end by their SHA-256."""

import fcntl
import os
import struct
import subprocess
from contextlib import contextmanager

from network import Server, ping

PROMPT = rb"~ # "


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


def test_tap_python_data_plane_ping_and_tcp_and_ping_over_passt(console_session) -> None:
    with persistent_tap("eltap0", "192.168.77.1/24"):
        server = Server("192.168.77.1")
        guest = console_session("--net", "tap=eltap0,mac=52:54:00:aa:bb:01", "--net", "user")
        guest.expect(rb"elvisor-guest: eth1 has 10\.0\.2\.15/24")  # passt, by DHCP
        guest.expect(PROMPT)
        ping(guest, "10.0.2.2")  # the lab host, through passt
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
