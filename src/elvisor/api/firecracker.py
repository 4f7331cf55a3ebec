"""Firecracker's API, the subset that covers what elvisor has: the resources of a microVM
(as Firecracker names them) and the requests that configure, start and drive it.

Read from Firecracker's API description (its swagger file and docs/api_requests/), not from
its code. Bodies are checked as Firecracker checks them: unknown fields and wrong types are a
400 with a `fault_message`; so is every request for something elvisor does not have, naming
it. The same resource model reads Firecracker's JSON configuration file (`--config-file`).

Differences, on purpose: the serial console is a PL011 (`ttyAMA0`; `console=ttyS0` in the
boot arguments is changed to it); vsock is the host kernel's (vhost-vsock: host programs
connect to the guest's CID with AF_VSOCK), so `uds_path` is taken but not used; a drive's
`cache_type` is always honoured as `Writeback` (a guest flush reaches the disk); there are no
rate limiters, balloon, MMDS, CPU templates, pmem, memory hot-plug or diff snapshots.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from elvisor.config import Settings, VmConfig

NOT_AFTER_START = "this request is only accepted before the microVM starts (InstanceStart)"
NOT_BEFORE_START = "the microVM has not been started: PUT /actions InstanceStart first"

# the resources Firecracker has and elvisor does not: path prefix -> what it is
UNSUPPORTED = {
    "/balloon": "balloon device",
    "/mmds": "MMDS (microVM metadata service)",
    "/cpu-config": "CPU templates",
    "/pmem": "virtio-pmem devices",
    "/hotplug": "memory hot-plug",
    "/serial": "serial output redirection (the console is the process's stdin and stdout)",
}
UNSUPPORTED_SECTIONS = {  # in a configuration file
    "balloon": UNSUPPORTED["/balloon"],
    "mmds-config": UNSUPPORTED["/mmds"],
    "cpu-config": UNSUPPORTED["/cpu-config"],
    "pmem": UNSUPPORTED["/pmem"],
    "memory-hotplug": UNSUPPORTED["/hotplug"],
    "serial": UNSUPPORTED["/serial"],
}
DEFAULT_BOOT_ARGS = "console=ttyAMA0 reboot=k panic=1"


class BadRequest(Exception):
    """A request Firecracker would answer with 400 and this fault message."""


@dataclass(frozen=True)
class Field:
    kind: type | tuple[type, ...]
    required: bool = False
    unsupported: str = ""  # non-empty: elvisor has no such thing; the value is refused


def checked(body: object, what: str, fields: dict[str, Field]) -> dict[str, Any]:
    """`body` as a JSON object with only `fields`, each of its type; BadRequest otherwise."""
    if not isinstance(body, dict):
        raise BadRequest(f"{what}: the body must be a JSON object")
    for name, value in body.items():
        spec = fields.get(name)
        if spec is None:
            raise BadRequest(
                f"{what}: unknown field `{name}`, expected one of "
                f"{', '.join(f'`{f}`' for f in fields)}"
            )
        if value is None and not spec.required:
            continue
        kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(_JSON_TYPES[k] for k in kinds)
            raise BadRequest(f"{what}: `{name}` must be {names}, not {value!r}")
        if spec.unsupported:
            raise BadRequest(f"{what}: `{name}`: elvisor has no {spec.unsupported}")
    for name, spec in fields.items():
        if spec.required and body.get(name) is None:
            raise BadRequest(f"{what}: missing field `{name}`")
    return {k: v for k, v in body.items() if v is not None}


_JSON_TYPES = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    dict: "an object",
    list: "an array",
}

RATE_LIMITER = Field(dict, unsupported="rate limiters")
BOOT_SOURCE = {
    "kernel_image_path": Field(str, required=True),
    "initrd_path": Field(str),
    "boot_args": Field(str),
}
MACHINE_CONFIG = {
    "vcpu_count": Field(int, required=True),
    "mem_size_mib": Field(int, required=True),
    "smt": Field(bool),
    "track_dirty_pages": Field(bool),
    "huge_pages": Field(str),
    "cpu_template": Field(str),
}
DRIVE = {
    "drive_id": Field(str, required=True),
    "is_root_device": Field(bool, required=True),
    "path_on_host": Field(str),
    "is_read_only": Field(bool),
    "partuuid": Field(str),
    "cache_type": Field(str),
    "io_engine": Field(str),
    "rate_limiter": RATE_LIMITER,
    "socket": Field(str, unsupported="vhost-user block devices (yet)"),
}
PARTIAL_DRIVE = {
    "drive_id": Field(str, required=True),
    "path_on_host": Field(str),
    "rate_limiter": RATE_LIMITER,
}
NETWORK_INTERFACE = {
    "iface_id": Field(str, required=True),
    "host_dev_name": Field(str, required=True),
    "guest_mac": Field(str),
    "mtu": Field(int, unsupported="MTU setting"),
    "rx_rate_limiter": RATE_LIMITER,
    "tx_rate_limiter": RATE_LIMITER,
}
PARTIAL_NETWORK_INTERFACE = {
    "iface_id": Field(str, required=True),
    "rx_rate_limiter": RATE_LIMITER,
    "tx_rate_limiter": RATE_LIMITER,
}
VSOCK = {
    "guest_cid": Field(int, required=True),
    "uds_path": Field(str, required=True),
    "vsock_id": Field(str),
}
ENTROPY = {"rate_limiter": RATE_LIMITER}
LOGGER = {
    "log_path": Field(str),
    "level": Field(str),
    "show_level": Field(bool),
    "show_log_origin": Field(bool),
    "module": Field(str),
}
METRICS = {"metrics_path": Field(str, required=True)}
SNAPSHOT_CREATE = {
    "snapshot_path": Field(str, required=True),
    "mem_file_path": Field(str, required=True),
    "snapshot_type": Field(str),
}
SNAPSHOT_LOAD = {
    "snapshot_path": Field(str, required=True),
    "mem_file_path": Field(str),
    "mem_backend": Field(dict),
    "resume_vm": Field(bool),
    "enable_diff_snapshots": Field(bool, unsupported="diff snapshots"),
    "track_dirty_pages": Field(bool, unsupported="dirty page tracking"),
    "network_overrides": Field(list, unsupported="network overrides (yet)"),
    "vsock_override": Field(dict, unsupported="vsock overrides (vsock is vhost-vsock)"),
    "clock_realtime": Field(bool, unsupported="clock_realtime (it is x86 only)"),
}
MEMORY_BACKEND = {
    "backend_type": Field(str, required=True),
    "backend_path": Field(str, required=True),
}
LOG_LEVELS = ("error", "warning", "info", "debug", "trace", "off")


@dataclass
class Resources:
    """A microVM's resources as Firecracker's API sets them before it starts."""

    boot_source: dict[str, Any] | None = None
    machine_config: dict[str, Any] = field(
        default_factory=lambda: {
            "vcpu_count": 1,
            "mem_size_mib": 128,
            "smt": False,
            "track_dirty_pages": False,
            "huge_pages": "None",
        }
    )
    drives: dict[str, dict[str, Any]] = field(default_factory=dict)
    network_interfaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    vsock: dict[str, Any] | None = None
    entropy: dict[str, Any] | None = None
    logger: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None

    @classmethod
    def of(cls, config: VmConfig, logging: Resources | None = None) -> Resources:
        """The resources of a VM configured otherwise (`elvisor run --api-sock`, or a
        snapshot), with the logger and metrics of `logging`."""
        boot: dict[str, Any] | None = None
        if config.kernel or config.binary:
            boot = {"kernel_image_path": str(config.kernel or config.binary),
                    "boot_args": config.cmdline}  # fmt: skip
            if config.initrd is not None:
                boot["initrd_path"] = str(config.initrd)
        resources = cls(boot_source=boot, entropy={} if config.rng else None)
        if logging is not None:
            resources.logger, resources.metrics = logging.logger, logging.metrics
        resources.machine_config |= {"vcpu_count": config.cpus, "mem_size_mib": config.memory >> 20}
        for index, disk in enumerate(config.disks):
            resources.drives[f"drive{index}"] = {
                "drive_id": f"drive{index}",
                "path_on_host": str(disk.path),
                "is_root_device": False,
                "is_read_only": disk.readonly,
            }
        for index, net in enumerate(config.nets):
            iface = {"iface_id": f"net{index}", "host_dev_name": net.tap or "passt"}
            if net.mac is not None:
                iface["guest_mac"] = ":".join(f"{b:02x}" for b in net.mac)
            resources.network_interfaces[f"net{index}"] = iface
        if config.vsock_cid is not None:
            resources.vsock = {"guest_cid": config.vsock_cid, "uds_path": ""}
        return resources

    def configured(self) -> bool:
        """Whether anything but the logger and the metrics was set."""
        fresh = Resources(logger=self.logger, metrics=self.metrics)
        return self != fresh

    # --- each resource, as PUT (and PATCH) set it ----------------------------------------

    def put_boot_source(self, body: object) -> None:
        self.boot_source = checked(body, "boot-source", BOOT_SOURCE)

    def put_machine_config(self, body: object, partial: bool = False) -> None:
        fields = MACHINE_CONFIG
        if partial:
            fields = {k: Field(f.kind) for k, f in MACHINE_CONFIG.items()}
        new = checked(body, "machine-config", fields)
        base = self.machine_config if partial else Resources().machine_config
        config = base | new
        vcpus, memory = config["vcpu_count"], config["mem_size_mib"]
        if not 1 <= vcpus <= 32:
            raise BadRequest(f"machine-config: vcpu_count {vcpus} is not from 1 to 32")
        if memory < 8:
            raise BadRequest(f"machine-config: mem_size_mib {memory} is below elvisor's 8 MiB")
        if config.get("smt"):
            raise BadRequest("machine-config: simultaneous multithreading (smt) is x86 only")
        if config.get("cpu_template", "None") != "None":
            raise BadRequest("machine-config: elvisor has no CPU templates (cpu_template)")
        if config.get("huge_pages", "None") != "None":
            raise BadRequest("machine-config: elvisor has no huge pages for guest memory (yet)")
        self.machine_config = config

    def put_drive(self, drive_id: str, body: object) -> None:
        drive = checked(body, f"drive {drive_id}", DRIVE)
        _same_id(drive_id, drive["drive_id"])
        if "path_on_host" not in drive:
            raise BadRequest(f"drive {drive_id}: missing field `path_on_host`")
        if drive.get("cache_type", "Unsafe") not in ("Unsafe", "Writeback"):
            raise BadRequest(f"drive {drive_id}: cache_type is Unsafe or Writeback")
        if drive.get("io_engine", "Sync") not in ("Sync", "Async"):
            raise BadRequest(f"drive {drive_id}: io_engine is Sync or Async")
        if drive["is_root_device"] and any(
            d["is_root_device"] for i, d in self.drives.items() if i != drive_id
        ):
            raise BadRequest(f"drive {drive_id}: another drive is already the root device")
        self.drives[drive_id] = drive

    def put_network_interface(self, iface_id: str, body: object) -> None:
        iface = checked(body, f"network interface {iface_id}", NETWORK_INTERFACE)
        _same_id(iface_id, iface["iface_id"])
        mac = iface.get("guest_mac")
        if mac is not None and not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", mac):
            raise BadRequest(f"network interface {iface_id}: guest_mac {mac!r} is not a MAC")
        for other_id, other in self.network_interfaces.items():
            if other_id != iface_id and other["host_dev_name"] == iface["host_dev_name"]:
                raise BadRequest(
                    f"network interface {iface_id}: {iface['host_dev_name']} is "
                    f"already the host device of {other_id}"
                )
        self.network_interfaces[iface_id] = iface

    def put_vsock(self, body: object) -> None:
        vsock = checked(body, "vsock", VSOCK)
        if not 3 <= vsock["guest_cid"] < 0xFFFF_FFFF:
            raise BadRequest(f"vsock: guest_cid {vsock['guest_cid']} is not from 3 to 2^32-2")
        self.vsock = vsock

    def put_entropy(self, body: object) -> None:
        self.entropy = checked(body, "entropy", ENTROPY)

    def put_logger(self, body: object) -> None:
        logger = checked(body, "logger", LOGGER)
        if logger.get("level", "Info").lower() not in LOG_LEVELS:
            raise BadRequest(f"logger: level is one of {', '.join(LOG_LEVELS)} (any case)")
        self.logger = logger

    def put_metrics(self, body: object) -> None:
        if self.metrics is not None:
            raise BadRequest("metrics: the metrics system is already set up")
        self.metrics = checked(body, "metrics", METRICS)

    # --- what they describe --------------------------------------------------------------

    def settings(self) -> Settings:
        """The VM, as settings for `elvisor.config.vm_from_settings`."""
        if self.boot_source is None:
            raise BadRequest("cannot start a microVM without a kernel: PUT /boot-source first")
        boot = self.boot_source
        args = boot.get("boot_args", DEFAULT_BOOT_ARGS)
        args = re.sub(r"\bconsole=ttyS0\b", "console=ttyAMA0", args)
        drives = sorted(self.drives.values(), key=lambda d: not d["is_root_device"])
        root = next((d for d in drives if d["is_root_device"]), None)
        if root is not None:
            where = f"PARTUUID={root['partuuid']}" if root.get("partuuid") else "/dev/vda"
            args += f" root={where} {'ro' if root.get('is_read_only') else 'rw'}"
        settings: Settings = {
            "kernel": boot["kernel_image_path"],
            "cmdline": args,
            "cpus": self.machine_config["vcpu_count"],
            "memory": self.machine_config["mem_size_mib"],
            "disk": [d["path_on_host"] + (",ro" if d.get("is_read_only") else "") for d in drives],
            "net": [_net_option(n) for n in self.network_interfaces.values()],
            "rng": self.entropy is not None,
            "reboot": False,  # (a guest reboot ends the process, as with Firecracker on arm64)
        }
        if "initrd_path" in boot:
            settings["initrd"] = boot["initrd_path"]
        if self.vsock is not None:
            settings["vsock"] = self.vsock["guest_cid"]
        return settings

    def vm_config(self) -> dict[str, object]:
        """GET /vm/config: every resource, in Firecracker's shape."""
        return {
            "boot-source": self.boot_source,
            "machine-config": self.machine_config,
            "drives": list(self.drives.values()),
            "network-interfaces": list(self.network_interfaces.values()),
            "vsock": self.vsock,
            "entropy": self.entropy,
            "logger": self.logger,
            "metrics": self.metrics,
            "balloon": None,
            "mmds-config": None,
        }

    # --- Firecracker's JSON configuration file ---------------------------------------------

    def load(self, document: object) -> None:
        """Apply a configuration file: the sections of GET /vm/config, each set as its PUT
        would set it."""
        if not isinstance(document, dict):
            raise BadRequest("the configuration must be a JSON object")
        sections: dict[str, Callable[[Any], None]] = {
            "boot-source": self.put_boot_source,
            "machine-config": self.put_machine_config,
            "drives": self._put_drives,
            "network-interfaces": self._put_network_interfaces,
            "vsock": self.put_vsock,
            "entropy": self.put_entropy,
            "logger": self.put_logger,
            "metrics": self.put_metrics,
        }
        for name, value in document.items():
            if name in sections:
                if value is not None:
                    sections[name](value)
            elif name in UNSUPPORTED_SECTIONS:
                if value not in (None, {}, []):
                    raise BadRequest(f"`{name}`: elvisor has no {UNSUPPORTED_SECTIONS[name]}")
            else:
                raise BadRequest(
                    f"unknown section `{name}`, expected one of "
                    f"{', '.join(f'`{s}`' for s in sections)}"
                )

    def _put_drives(self, items: object) -> None:
        for drive in _array(items):
            self.put_drive(_id(drive, "drive_id"), drive)

    def _put_network_interfaces(self, items: object) -> None:
        for iface in _array(items):
            self.put_network_interface(_id(iface, "iface_id"), iface)


def _same_id(from_path: str, from_body: str) -> None:
    if from_path != from_body:
        raise BadRequest(f"the id in the path ({from_path}) differs from the body's ({from_body})")


def _array(value: object) -> list[object]:
    if not isinstance(value, list):
        raise BadRequest(f"expected an array, not {value!r}")
    return value


def _id(item: object, key: str) -> str:
    value = item.get(key) if isinstance(item, dict) else None
    if not isinstance(value, str):
        raise BadRequest(f"each item needs a string `{key}`")
    return value


def _net_option(iface: dict[str, Any]) -> str:
    option = f"tap={iface['host_dev_name']}"
    return option + (f",mac={iface['guest_mac']}" if "guest_mac" in iface else "")
