"""VmConfig: every bad value is one clear error, before any ioctl; and `elvisor run`'s lines."""

import struct
import subprocess
import sys

import pytest

from elvisor.config import DiskConfig, NetConfig, VmConfig, parse_vsock
from elvisor.errors import UserError


@pytest.fixture
def kernel(tmp_path):
    path = tmp_path / "Image"
    path.write_bytes(struct.pack("<IIQQQQQQII", 0, 0, 0, 1 << 20, 0, 0, 0, 0, 0x644D5241, 0))
    return path


@pytest.fixture
def raw(tmp_path):
    path = tmp_path / "guest.bin"
    path.write_bytes(b"\x00\x00\x00\x14")
    return path


def test_a_good_config(kernel) -> None:
    config = VmConfig(kernel=kernel, memory=64 << 20, cpus=2, gic=2)
    assert config.cmdline == "console=ttyAMA0"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda k, r, t: VmConfig(), "give a kernel"),
        (lambda k, r, t: VmConfig(kernel=k, binary=r, load_addr=0), "give a kernel"),
        (lambda k, r, t: VmConfig(kernel=t / "nope"), "does not exist"),
        (lambda k, r, t: VmConfig(kernel=t), "is not a file"),
        (lambda k, r, t: VmConfig(kernel=r), "neither an arm64 Linux Image"),
        (lambda k, r, t: VmConfig(kernel=k, load_addr=0x4000_0000), "goes with --binary"),
        (lambda k, r, t: VmConfig(kernel=k, initrd=t / "nope"), "initrd .* does not exist"),
        (lambda k, r, t: VmConfig(kernel=k, memory=1 << 20), "too small"),
        (lambda k, r, t: VmConfig(kernel=k, memory=1 << 50), "more than this host"),
        (lambda k, r, t: VmConfig(kernel=k, cpus=0), "at least 1"),
        (lambda k, r, t: VmConfig(kernel=k, gic=4), "must be 2 or 3"),
        (lambda k, r, t: VmConfig(kernel=k, cmdline="x" * 3000), "longer than 2047"),
        (lambda k, r, t: VmConfig(kernel=k, vsock_cid=2), "context ID is from 3"),
        (lambda k, r, t: VmConfig(kernel=k, vsock_cid=1 << 32), "context ID is from 3"),
        (lambda k, r, t: VmConfig(kernel=k, disks=(DiskConfig(k), DiskConfig(k))), "given twice"),
    ],
)
def test_bad_configs(kernel, raw, tmp_path, make, message: str) -> None:
    with pytest.raises(UserError, match=message):
        make(kernel, raw, tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user", NetConfig("user")),
        ("tap=tap0", NetConfig("tap", "tap0")),
        ("tap=tap0,vhost=off", NetConfig("tap", "tap0", vhost=False)),
        ("tap=t,mac=52:54:00:12:34:56,vhost=on",
         NetConfig("tap", "t", bytes.fromhex("525400123456"), True)),
    ],
)  # fmt: skip
def test_net_options(text: str, expected: NetConfig) -> None:
    assert NetConfig.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tap", "give user or tap=NAME"),
        ("bridge=br0", "give user or tap=NAME"),
        ("user,vhost=on", "vhost=on or vhost=off, with a tap= port"),
        ("tap=t,vhost=yes", "vhost=on or vhost=off"),
        ("tap=t,mac=01:00:00:00:00:01", "multicast"),
        ("tap=t,mac=52:54:00:12:34", "not a MAC address"),
        ("tap=t,speed=10", "unknown option 'speed'"),
    ],
)
def test_bad_net_options(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        NetConfig.parse(text)


def test_vsock_option() -> None:
    assert parse_vsock("cid=42") == 42
    for bad in ("42", "cid=", "cid=-3", "port=3"):
        with pytest.raises(UserError, match="like --vsock cid=3"):
            parse_vsock(bad)


def test_elf_binary_needs_no_load_address(tmp_path) -> None:
    elf = tmp_path / "g.elf"
    elf.write_bytes(b"\x7fELF\x02\x01" + bytes(58))
    VmConfig(binary=elf)
    with pytest.raises(UserError, match="drop --load-addr"):
        VmConfig(binary=elf, load_addr=0x4008_0000)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kernel", "/nonexistent/Image"], "kernel /nonexistent/Image does not exist"),
        (["--kernel", "/etc/hostname"], "neither an arm64 Linux Image"),
        (["--binary", "/nonexistent.bin"], "binary /nonexistent.bin does not exist"),
        (["--binary", "/etc/hostname", "--load-addr", "zero"], "is not an address"),
        (
            ["--binary", "/etc/hostname", "--load-addr", "0x40080000", "--memory", "1T"],
            "more than this host",
        ),
    ],
)
def test_elvisor_run_bad_input(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "elvisor", "run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("elvisor: error:"), result.stderr
    assert message in lines[0]
