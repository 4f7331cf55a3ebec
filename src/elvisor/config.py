"""What a VM is made of, validated before the first ioctl: every user error is caught here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from elvisor.arch.arm64 import layout
from elvisor.errors import UserError
from elvisor.files import read_head
from elvisor.units import parse_size

if TYPE_CHECKING:
    from elvisor.arch.arm64 import boot

DEFAULT_MEMORY = 512 << 20
MIN_MEMORY = 8 << 20
DEFAULT_CMDLINE = "console=ttyAMA0"
MAX_CMDLINE = 2047  # arm64 COMMAND_LINE_SIZE, less the terminating NUL
SECTOR = 512  # virtio-blk's unit


def host_memory() -> int | None:
    """The host's RAM in bytes (MemTotal), if /proc/meminfo says."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _readable(path: Path, what: str) -> None:
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    if not path.is_file():
        raise UserError(f"{what} {path} is not a file")
    if not os.access(path, os.R_OK):
        raise UserError(f"{what} {path} is not readable: check its permissions")


@dataclass(frozen=True)
class DiskConfig:
    """A raw disk image file for a virtio-blk device."""

    path: Path
    readonly: bool = False

    def __post_init__(self) -> None:
        path = self.path
        if not path.exists():
            raise UserError(f"disk {path} does not exist: create it (truncate -s 1G {path})")
        if not (path.is_file() or path.is_block_device()):
            raise UserError(f"disk {path} is neither a file nor a block device")
        mode = os.R_OK if self.readonly else os.R_OK | os.W_OK
        if not os.access(path, mode):
            hint = "" if self.readonly else " (or add ,ro)"
            raise UserError(f"disk {path} is not {'readable' if self.readonly else 'writable'}: "
                            f"check its permissions{hint}")  # fmt: skip
        try:
            with path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)  # (a block device's st_size is 0)
        except OSError as e:
            raise UserError(f"cannot read disk {path}: {e.strerror}") from None
        if size < SECTOR:
            raise UserError(f"disk {path} is smaller than one {SECTOR}-byte sector")

    @classmethod
    def parse(cls, text: str) -> DiskConfig:
        """`PATH[,ro]`, as --disk takes it."""
        path, _, options = text.partition(",")
        if not path:
            raise UserError(f"--disk {text!r}: give a path, like --disk disk.img[,ro]")
        if options not in ("", "ro", "rw"):
            raise UserError(f"--disk {text!r}: unknown option {options!r} (ro is the only one)")
        return cls(Path(path), readonly=options == "ro")


@dataclass(frozen=True)
class DeviceConfig:
    """A Python device of the user's on the MMIO bus (elvisor.devices.python): its class
    ("module:Class", "file.py:Class", or the class itself) and the options it is made with."""

    target: str | type
    options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        self.device_class()  # (found and checked now, before anything is built)

    def device_class(self) -> type:
        from elvisor.devices import python

        if isinstance(self.target, type):
            return python.load_class(f"{self.target.__module__}:{self.target.__qualname__}",
                                     "device")  # fmt: skip
        return python.load_class(self.target, f"--device {self.target}")

    @classmethod
    def parse(cls, text: str) -> DeviceConfig:
        """`module:Class[,key=value]...`, as --device takes it."""
        target, *pairs = text.split(",")
        options = []
        for pair in pairs:
            key, equals, value = pair.partition("=")
            if not equals or not key.isidentifier():
                raise UserError(f"--device {text!r}: options are key=value, not {pair!r}")
            options.append((key, value))
        return cls(target, tuple(options))


@dataclass(frozen=True)
class NetConfig:
    """A virtio-net port: on passt (user-mode networking, no privileges) or a TAP device."""

    backend: str = "user"  # "user" (passt) or "tap"
    tap: str | None = None  # the TAP device's name
    mac: bytes | None = None  # None: a random locally administered address
    vhost: bool | None = None  # TAP: the kernel's data plane; None: where /dev/vhost-net works

    @classmethod
    def parse(cls, text: str) -> NetConfig:
        """`user[,mac=MAC]` or `tap=NAME[,mac=MAC][,vhost=on|off]`, as --net takes them."""
        first, *options = text.split(",")
        backend, _, tap = first.partition("=")
        if backend not in ("user", "tap") or (backend == "tap") != bool(tap):
            raise UserError(f"--net {text!r}: give user or tap=NAME, like --net tap=tap0")
        mac = vhost = None
        for option in options:
            key, _, value = option.partition("=")
            if key == "mac":
                mac = parse_mac(value)
            elif key == "vhost" and backend == "tap" and value in ("on", "off"):
                vhost = value == "on"
            elif key == "vhost":
                raise UserError(f"--net {text!r}: vhost=on or vhost=off, with a tap= port")
            else:
                raise UserError(f"--net {text!r}: unknown option {key!r} (mac= or vhost=)")
        if tap:
            from elvisor.devices.tap import check_tap_name

            check_tap_name(tap)
        return cls(backend, tap or None, mac, vhost)


def parse_mac(text: str) -> bytes:
    parts = text.split(":")
    try:
        mac = bytes(int(p, 16) for p in parts if len(p) == 2)
    except ValueError:
        mac = b""
    if len(parts) != 6 or len(mac) != 6:
        raise UserError(f"mac={text!r} is not a MAC address (like 52:54:00:12:34:56)")
    if mac[0] & 1:
        raise UserError(f"mac={text}: a multicast address cannot be a port's own")
    return mac


CONSOLES = ("serial", "virtio")
VSOCK_MIN_CID, VSOCK_MAX_CID = 3, 0xFFFF_FFFF  # (U32_MAX is VMADDR_CID_ANY)


def parse_vsock(text: str) -> int:
    """`cid=N`, as --vsock takes it: the guest's context ID."""
    key, _, value = text.partition("=")
    if key != "cid" or not value.isdigit():
        raise UserError(f"--vsock {text!r}: give the guest's context ID, like --vsock cid=3")
    return int(value)


@dataclass(frozen=True)
class VmConfig:
    """A VM: what it boots and what it has. Invalid values raise UserError on construction."""

    kernel: Path | None = None  # an arm64 Linux Image (gzip allowed) or an ELF file
    initrd: Path | None = None
    cmdline: str = DEFAULT_CMDLINE
    memory: int = DEFAULT_MEMORY  # bytes
    cpus: int = 1
    gic: int | None = None  # 2 or 3; None: v3 where the host offers it
    binary: Path | None = None  # a bare-metal program: raw or ELF
    load_addr: int | None = None  # a raw binary's; None: 512 KiB into RAM, as a kernel Image
    reboot: bool = True  # PSCI SYSTEM_RESET reboots the guest (else the VM ends)
    pmu: bool = False  # a PMU v3 for the guest (the host's perf events back it)
    console: str = "serial"  # the guest's console: "serial" (PL011) or "virtio" (hvc0)
    disks: tuple[DiskConfig, ...] = ()  # virtio-blk, in order: /dev/vda, /dev/vdb, ...
    rng: bool = True  # a virtio entropy device
    nets: tuple[NetConfig, ...] = ()  # virtio-net ports, in order: eth0, eth1, ...
    vsock_cid: int | None = None  # a virtio-vsock device (vhost-vsock) with this context ID
    devices: tuple[DeviceConfig, ...] = ()  # Python devices of the user's (--device)
    snapshot: Path | None = None  # restore this snapshot's memory file: nothing is booted

    def __post_init__(self) -> None:
        if self.snapshot is None and (self.kernel is None) == (self.binary is None):
            raise UserError("give a kernel (--kernel) or a bare-metal program (--binary)")
        if self.kernel is not None:
            _readable(self.kernel, "kernel")
        if self.binary is not None:
            _readable(self.binary, "binary")
            from elvisor.arch.arm64 import boot as loader  # (not needed by a restored VM)

            is_elf = loader.kind_of(read_head(self.binary, "binary", 64)) == "elf"
            if is_elf and self.load_addr is not None:
                raise UserError(
                    f"{self.binary} is an ELF file: it says where it loads, drop --load-addr"
                )
        elif self.load_addr is not None:
            raise UserError("--load-addr goes with --binary")
        if self.initrd is not None:
            _readable(self.initrd, "initrd")
        if len(self.cmdline.encode()) > MAX_CMDLINE:
            raise UserError(f"the kernel command line is longer than {MAX_CMDLINE} bytes")
        if self.memory < MIN_MEMORY:
            raise UserError(
                f"--memory {self.memory >> 20}M is too small: at least {MIN_MEMORY >> 20}M"
            )
        host = host_memory()
        if host is not None and self.memory > host:
            raise UserError(
                f"--memory {self.memory >> 20}M is more than this host's {host >> 20} MiB of RAM"
            )
        if self.cpus < 1:
            raise UserError(f"--cpus must be at least 1, not {self.cpus}")
        if self.gic not in (None, 2, 3):
            raise UserError(f"--gic must be 2 or 3, not {self.gic}")
        if self.console not in CONSOLES:
            raise UserError(f"--console must be serial or virtio, not {self.console!r}")
        if self.vsock_cid is not None and not VSOCK_MIN_CID <= self.vsock_cid < VSOCK_MAX_CID:
            raise UserError(
                f"vsock cid={self.vsock_cid}: a guest's context ID is from {VSOCK_MIN_CID} "
                f"to {VSOCK_MAX_CID - 1} (0-2 are the hypervisor's and the host's)"
            )
        if len(self.devices) > layout.USER_DEVICES:
            raise UserError(
                f"{len(self.devices)} devices (--device): at most {layout.USER_DEVICES}"
            )
        paths = [d.path.resolve() for d in self.disks]
        for path in paths:
            if paths.count(path) > 1:
                raise UserError(f"disk {path} is given twice")
        if self.snapshot is None:  # what it boots, placed in its RAM from the files' headers
            from elvisor.arch.arm64 import boot as loader

            loader.plan(self.boot, loader.Ram(layout.RAM_BASE, self.memory))

    @property
    def boot(self) -> boot.BootFiles:
        """What it boots: the files and where a raw binary goes."""
        from elvisor.arch.arm64 import boot as loader

        return loader.BootFiles(self.kernel, self.binary, self.load_addr, self.initrd)


def boot_files(
    kernel: Path | None, initrd: Path | None, binary: Path | None
) -> tuple[Path | None, Path | None, str]:
    """(kernel, initrd, default command line) to boot: the default guest's (built on first
    use) where neither a kernel nor a bare-metal binary is given."""
    if kernel is not None or binary is not None:
        return kernel, initrd, DEFAULT_CMDLINE
    from elvisor.images import default_guest

    guest = default_guest()
    return guest.kernel, initrd or guest.initrd, guest.cmdline


# --- a VM described as data: a TOML table, a Firecracker JSON file, the command line -------
#
# One reader for all: the keys are `elvisor run`'s options (kernel, initrd, cmdline, binary,
# memory, cpus, gic, load_addr, disk, net, device, vsock, console, rng, pmu, reboot), with the
# values those options take (disk, net and device as lists of the option's strings; a device
# may be one string). `vm_settings` checks a
# table's keys and types and makes its paths absolute; settings from several places merge
# with a plain dict update (the later wins); `vm_from_settings` makes the VmConfig.

Settings = dict[str, object]

SETTING_TYPES: dict[str, tuple[type, ...]] = {
    "kernel": (str,),
    "initrd": (str,),
    "binary": (str,),
    "cmdline": (str,),
    "memory": (str, int),  # "512M", or a number of MiB
    "cpus": (int,),
    "gic": (int,),
    "load_addr": (int, str),
    "disk": (list,),  # ["disk.img", "other.img,ro"]
    "net": (list,),  # ["user", "tap=tap0,mac=52:54:00:12:34:56"]
    "device": (list, str),  # ["counter.py:Counter,start=5"] (a Python device)
    "vsock": (str, int),  # "cid=3", or the CID
    "console": (str,),
    "rng": (bool,),
    "pmu": (bool,),
    "reboot": (bool,),
}
TYPE_NAMES = {str: "a string", int: "an integer", list: "a list of strings", bool: "true or false"}
PATH_SETTINGS = ("kernel", "initrd", "binary")
BAREMETAL_SETTINGS = {"kernel", "initrd", "binary", "cmdline", "memory", "cpus"}


def vm_settings(table: dict[str, object], where: str, base: Path, keys: set[str]) -> Settings:
    """A table's settings, checked against `keys` and their types, with the paths in it
    taken relative to `base` (the directory of the file it came from)."""
    unknown = sorted(set(table) - keys)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (known: "
                        f"{', '.join(sorted(keys))})")  # fmt: skip
    settings: Settings = {}
    for key, value in table.items():
        types = SETTING_TYPES[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join(TYPE_NAMES[t] for t in types)
            raise UserError(f"{where}: {key} must be {wanted}, not {value!r}")
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise UserError(f"{where}: {key} must be a list of strings, not {value!r}")
            if key in ("disk", "device"):
                value = [_relative(base, v, key) for v in value]
        elif key == "device":
            value = [_relative(base, str(value), key)]
        if key in PATH_SETTINGS:
            value = str(base / str(value))
        settings[key] = value
    return settings


def _relative(base: Path, text: str, key: str) -> str:
    """A disk's path, or a device's file.py, relative to `base`."""
    path, comma, options = text.partition(",")
    if key == "device":
        module, colon, name = path.rpartition(":")
        if not module.endswith(".py"):
            return text
        path, options = module, f"{colon}{name}{comma}{options}"
        comma = ""
    return f"{base / path if path else ''}{comma}{options}"


def vm_from_settings(settings: Settings, default_memory: str = "512M") -> VmConfig:
    """The VmConfig of checked settings; neither kernel nor binary: the default guest."""

    def path(key: str) -> Path | None:
        value = settings.get(key)
        return None if value is None else Path(str(value))

    binary = path("binary")
    kernel, initrd, cmdline = boot_files(path("kernel"), path("initrd"), binary)
    console = str(settings.get("console", "serial"))
    if console == "virtio":
        cmdline = cmdline.replace("console=ttyAMA0", "console=hvc0")
    memory = settings.get("memory", default_memory)
    load_addr = settings.get("load_addr")
    vsock = settings.get("vsock")
    if vsock is not None and not isinstance(vsock, int):
        vsock = parse_vsock(str(vsock))
    return VmConfig(
        kernel=kernel,
        initrd=initrd,
        cmdline=str(settings.get("cmdline", cmdline)),
        memory=memory << 20 if isinstance(memory, int) else parse_size(str(memory), "M"),
        cpus=cpus if (cpus := _int(settings, "cpus")) is not None else 1,
        gic=_int(settings, "gic"),
        binary=binary,
        load_addr=_address(load_addr) if load_addr is not None else None,
        reboot=bool(settings.get("reboot", True)),
        pmu=bool(settings.get("pmu", False)),
        console=console,
        disks=tuple(DiskConfig.parse(str(d)) for d in _list(settings, "disk")),
        rng=bool(settings.get("rng", True)),
        nets=tuple(NetConfig.parse(str(n)) for n in _list(settings, "net")),
        devices=tuple(DeviceConfig.parse(str(d)) for d in _list(settings, "device")),
        vsock_cid=vsock,
    )


def _int(settings: Settings, key: str) -> int | None:
    value = settings.get(key)
    return value if isinstance(value, int) or value is None else int(str(value))


def _list(settings: Settings, key: str) -> list[object]:
    value = settings.get(key, [])
    return list(value) if isinstance(value, list | tuple) else [value]


def _address(value: object) -> int:
    try:
        return value if isinstance(value, int) else int(str(value), 0)
    except ValueError:
        raise UserError(f"load_addr {value!r} is not an address (like 0x40080000)") from None


def read_toml(path: Path) -> dict[str, object]:
    import tomllib

    try:
        return tomllib.loads(path.read_text())
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid TOML: {e}") from None


def load_vm(path: Path) -> Settings:
    """The settings of `elvisor run --config FILE`: one VM, its keys at the file's top level."""
    return vm_settings(read_toml(path), str(path), path.parent, set(SETTING_TYPES))


def load_vms(path: Path) -> list[VmConfig]:
    """The VMs of `elvisor baremetal --vms FILE`: `[[vm]]` tables, with the keys of
    `elvisor run --config` that the EL2 hypervisor has (paths relative to the file). A VM
    with neither kernel nor binary boots the default guest."""
    tables = read_toml(path).get("vm")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise UserError(f"{path}: describe each VM in a [[vm]] table")
    vms = []
    for index, table in enumerate(tables):
        where = f"{path}, VM {index}"
        settings = vm_settings(table, where, path.parent, BAREMETAL_SETTINGS)
        try:
            vms.append(vm_from_settings(settings, default_memory="256M"))
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
    return vms
