"""VmConfig: every bad value is one clear error, before any ioctl; and `elvisor run`'s lines."""

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from elvisor.config import DiskConfig, NetConfig, VmConfig, parse_vsock
from elvisor.errors import UserError


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
        (lambda k, r, t: VmConfig(kernel=k, disks=(DiskConfig(t / "disk.img"),) * 2),
         "given twice"),
        (lambda k, r, t: VmConfig(kernel=k, disks=(DiskConfig(k),)), "smaller than one 512-byte"),
        (lambda k, r, t: VmConfig(kernel=t / "Image.gz"), "truncated gzip"),
        (lambda k, r, t: VmConfig(kernel=t / "big", memory=16 << 20), "the kernel .* does not fit"),
        (lambda k, r, t: VmConfig(kernel=k, initrd=t / "big", memory=16 << 20),
         "too small for the kernel, device tree and initrd"),
        (lambda k, r, t: VmConfig(binary=r, load_addr=0x1000), "does not fit in guest RAM"),
        (lambda k, r, t: VmConfig(kernel=Path("/proc/self/mem")), "cannot read kernel"),
    ],
)  # fmt: skip
def test_bad_configs(kernel, raw, disk, tmp_path, make, message: str) -> None:
    """Each found by VmConfig itself: before /dev/kvm, on any host (and for baremetal build)."""
    whole = gzip.compress(kernel.read_bytes() + bytes(1 << 16))
    (tmp_path / "Image.gz").write_bytes(whole[: len(whole) // 2])
    with (tmp_path / "big").open("wb") as f:
        f.write(kernel.read_bytes())
        f.truncate(32 << 20)
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
        ("tap=a-name-of-16-bytes", "an interface name of 1 to 15 characters"),
        ("tap=a b", "an interface name of 1 to 15 characters"),
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
    header = bytearray(64 + 56)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<HHIQQ", header, 16, 2, 183, 1, 0x4008_0000, 64)  # AArch64, phoff 64
    struct.pack_into("<HH", header, 54, 56, 1)
    struct.pack_into("<IIQQQQQ", header, 64, 1, 5, 0, 0x4008_0000, 0x4008_0000, 120, 120)
    elf.write_bytes(bytes(header))
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
        (["--kernel", "/proc/self/mem"], "cannot read kernel /proc/self/mem: Input/output"),
        (["--binary", "/etc/hostname", "--disk", "/etc/hostname"], "smaller than one 512-byte"),
        (["--binary", "/etc/hostname", "--net", "tap=0123456789abcdef"], "1 to 15 characters"),
        (["baremetal", "build", "-o", "/nonexistent-dir/x.img", "--binary", "/etc/hostname"],
         "cannot write image /nonexistent-dir/x.img: No such file or directory"),
        (["--binary", "/etc/hostname", "--trace-file", "/tmp/t"], "add --trace exits"),
        (["--binary", "/etc/hostname", "--gdb-wait"], "add --gdb PORT"),
        (["--binary", "/etc/hostname", "--gdb", "localhost:http"], "give [HOST:]PORT"),
        (["--restore", "/tmp", "--gdb", "1234"], "drop --restore and --api-sock"),
        (["--binary", "/etc/hostname", "--trace", "exits", "--trace-file", "/nonexistent-dir/t"],
         "cannot write trace file /nonexistent-dir/t: No such file or directory"),
    ],
)  # fmt: skip
def test_elvisor_run_bad_input(args: list[str], message: str) -> None:
    """One line and status 2 on any host: these are all found before /dev/kvm is opened."""
    command = args if args[0] == "baremetal" else ["run", *args]
    result = subprocess.run(
        [sys.executable, "-m", "elvisor", *command],
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


# --- a VM in a file: `elvisor run --config vm.toml` ---------------------------------------


def run_config(*argv: str) -> VmConfig:
    from elvisor.api.control import Api
    from elvisor.api.instance import Instance
    from elvisor.cli import _run_config, build_parser

    return _run_config(build_parser().parse_args(["run", *argv]), Api(Instance()))


def test_a_toml_file_describes_the_vm_as_the_command_line_does(kernel, disk, tmp_path) -> None:
    vm_toml = tmp_path / "vm.toml"
    vm_toml.write_text(
        'kernel = "Image"\ncmdline = "console=hvc0 quiet"\nmemory = "64M"\ncpus = 2\ngic = 2\n'
        'disk = ["disk.img,ro"]\nnet = ["user,mac=52:54:00:12:34:56"]\nvsock = "cid=7"\n'
        'console = "virtio"\nrng = false\npmu = true\nreboot = false\n'
    )
    from_file = run_config("--config", str(vm_toml))
    from_command_line = run_config(
        "--kernel", str(kernel), "--cmdline", "console=hvc0 quiet", "--memory", "64M",
        "--cpus", "2", "--gic", "2", "--disk", f"{disk},ro", "--net",
        "user,mac=52:54:00:12:34:56", "--vsock", "cid=7", "--console", "virtio", "--no-rng",
        "--pmu", "--no-reboot",
    )  # fmt: skip
    assert from_file == from_command_line
    assert from_file.disks == (DiskConfig(disk, readonly=True),)  # relative to the file
    assert from_file.memory == 64 << 20 and not from_file.rng and not from_file.reboot


def test_firecrackers_json_describes_the_vm_as_the_command_line_does(kernel, disk, tmp_path):
    vm_json = tmp_path / "vm.json"
    vm_json.write_text(json.dumps({
        "boot-source": {"kernel_image_path": str(kernel), "boot_args": "console=ttyS0 quiet"},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 64},
        "drives": [{"drive_id": "d", "path_on_host": str(disk), "is_root_device": False,
                    "is_read_only": True}],
        "entropy": {},
    }))  # fmt: skip
    from_file = run_config("--config-file", str(vm_json), "--cpus", "1")
    from_command_line = run_config(
        "--kernel", str(kernel), "--cmdline", "console=ttyAMA0 quiet", "--memory", "64M",
        "--cpus", "1", "--disk", f"{disk},ro", "--no-reboot",
    )  # fmt: skip
    assert from_file == from_command_line
    with pytest.raises(UserError, match="one file describes the VM"):
        run_config("--config-file", str(vm_json), "--config", str(vm_json))


def test_the_command_line_wins_over_the_file(kernel, tmp_path) -> None:
    vm_toml = tmp_path / "vm.toml"
    vm_toml.write_text(f'kernel = "{kernel}"\nmemory = 64\ncpus = 2\nrng = false\n')
    config = run_config("--config", str(vm_toml), "--memory", "96M", "--cpus", "1")
    assert (config.memory, config.cpus, config.rng) == (96 << 20, 1, False)
    assert run_config("--config", str(vm_toml)).memory == 64 << 20  # a number is MiB


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('kernel = "Image"\nmemroy = "64M"\n', "vm.toml: unknown key 'memroy' (known: binary,"),
        ('kernel = "Image"\ncpus = "2"\n', "vm.toml: cpus must be an integer, not '2'"),
        ('kernel = "Image"\nrng = 0\n', "vm.toml: rng must be true or false, not 0"),
        ('kernel = "Image"\ndisk = "disk.img"\n', "vm.toml: disk must be a list of strings"),
        ('kernel = "Image"\nnet = [1]\n', "vm.toml: net must be a list of strings, not [1]"),
        ('kernel = "Image"\nmemory = "4M"\n', "vm.toml: --memory 4M is too small"),
        ('kernel = "Image"\nconsole = "vga"\n', "vm.toml: --console must be serial or virtio"),
        ('kernel = "Missing"\n', "vm.toml: kernel " ),
        ("kernel = \n", "vm.toml is not valid TOML: "),
    ],
)  # fmt: skip
def test_bad_config_files_are_one_line_naming_the_file_and_key(
    kernel, tmp_path, text: str, message: str
) -> None:
    vm_toml = tmp_path / "vm.toml"
    vm_toml.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "elvisor", "run", "--config", str(vm_toml)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"elvisor: error: {tmp_path}/"), result.stderr
    assert message in lines[0]


def test_a_missing_config_file_is_one_line(tmp_path) -> None:
    with pytest.raises(UserError, match=r"cannot read .*nowhere.toml: No such file"):
        run_config("--config", str(tmp_path / "nowhere.toml"))
