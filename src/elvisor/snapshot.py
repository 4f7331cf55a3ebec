"""Snapshots: a paused VM as two files, and a VM made again from them in another process.

The state file is JSON that describes itself: its format and version, the host it needs
(page size, GIC version, IPA size), the machine (the VmConfig fields that build it, with each
disk's size and modification time), every vCPU register KVM lists (KVM_GET_REG_LIST: core,
FP/SIMD, system registers, the timer and the counter), each vCPU's MP state, the vGIC's whole
state, the PL011, the PL031 and each virtio transport with its queues' positions (the kernel's,
for vhost queues). A SHA-256 of its contents catches corruption and truncation. The memory
file is guest RAM, byte for byte, written sparsely (pages of zeros are holes); a restore maps
it copy-on-write, so nothing is read until the guest touches it.

A restore builds the same machine (the same disks, TAP devices and vsock CID; a new passt),
puts the state back into it before any vCPU runs, and leaves the VM paused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elvisor.arch.arm64 import gic, vgic_state
from elvisor.config import DiskConfig, NetConfig, VmConfig
from elvisor.errors import UserError
from elvisor.kvm import KvmError
from elvisor.kvm.fds import open_kvm

if TYPE_CHECKING:
    from elvisor.builder import Machine

FORMAT = "elvisor-snapshot"
VERSION = 1
STATE_FILE, MEMORY_FILE = "state.json", "memory"
CHUNK = 1 << 20  # bytes of guest RAM written (or skipped, if all zero) at a time
ZERO_CHUNK = bytes(CHUNK)
MAX_STATE = 64 << 20  # bytes: a state file is far smaller


@dataclass(frozen=True)
class Files:
    """Where a snapshot is: its state file and its memory file."""

    state: Path
    memory: Path

    @classmethod
    def in_dir(cls, directory: Path) -> Files:
        return cls(directory / STATE_FILE, directory / MEMORY_FILE)


class SnapshotError(UserError):
    """A snapshot that cannot be taken or restored here: one line for the user."""


# --- taking one --------------------------------------------------------------------------


def save(machine: Machine, files: Files) -> None:
    """Write the snapshot of `machine`, whose vCPUs and I/O threads are parked."""
    if machine.config.devices:
        raise SnapshotError("a VM with Python devices of its own (--device) cannot be "
                            "snapshotted: elvisor cannot save their state")  # fmt: skip
    transports = [slot.transport for slot in machine.virtio]
    try:
        body = {
            "format": FORMAT,
            "version": VERSION,
            "host": {"page_size": mmap.PAGESIZE, "ipa_bits": machine.ipa_bits},
            "machine": _machine(machine),
            "vcpus": [
                {
                    "regs": [[r, v.get_one_reg(r)] for r in v.get_reg_list()],
                    "mp_state": v.get_mp_state(),
                }
                for v in machine.vcpus
            ],
            "gic": vgic_state.save(machine.gic, machine.mpidrs),
            "devices": {
                "pl011": machine.uart.state(),
                "pl031": machine.rtc.state(),
                "virtio": [t.state() for t in transports],
            },
        }
        for path in (files.state, files.memory):
            path.parent.mkdir(parents=True, exist_ok=True)
        _write_memory(machine, files.memory)
        text = json.dumps(body, sort_keys=True)
        document = json.dumps({"sha256": hashlib.sha256(text.encode()).hexdigest(),
                               "body": body}, sort_keys=True)  # fmt: skip
        _write_synced(files.state, document.encode())
    except OSError as e:
        raise SnapshotError(
            f"cannot write the snapshot: {e.filename or ''}: {e.strerror}"
        ) from None
    finally:
        for transport in transports:
            transport.thaw()


def _machine(machine: Machine) -> dict[str, Any]:
    c = machine.config
    disks = []
    for disk in c.disks:
        with open(disk.path, "rb+" if not disk.readonly else "rb") as f:
            if not disk.readonly:
                os.fsync(f.fileno())  # (what the guest was told is written, is)
            st = os.fstat(f.fileno())
            size = f.seek(0, os.SEEK_END)
        disks.append({"path": str(disk.path.resolve()), "readonly": disk.readonly,
                      "size": size, "mtime_ns": st.st_mtime_ns})  # fmt: skip
    return {
        "cpus": c.cpus,
        "memory": c.memory,
        "gic": machine.gic.version,
        "pmu": c.pmu,
        "console": c.console,
        "rng": c.rng,
        "cmdline": c.cmdline,
        "disks": disks,
        "nets": [
            {
                "backend": n.backend,
                "tap": n.tap,
                "mac": n.mac.hex() if n.mac else None,
                "vhost": n.vhost,
            }
            for n in c.nets
        ],
        "vsock_cid": c.vsock_cid,
        "mpidrs": machine.mpidrs,
    }


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[int]:
    """A file written beside `path` (an fd), synced and renamed over it when whole; removed
    if not. A VM restored from the old file keeps mapping it: truncating a file under its
    mapping would take the guest's memory away."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        yield fd
        os.fsync(fd)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    finally:
        os.close(fd)


def _write_memory(machine: Machine, path: Path) -> None:
    """Guest RAM, with holes where it is all zeros (a fresh guest's RAM mostly is)."""
    with _replacing(path) as fd:
        offset = 0
        for region in machine.memory.regions:
            view = memoryview(region.mapping)
            try:
                for start in range(0, region.size, CHUNK):
                    chunk = view[start : start + CHUNK]
                    if chunk != ZERO_CHUNK[: len(chunk)]:
                        os.pwrite(fd, chunk, offset + start)
            finally:
                view.release()
            offset += region.size
        os.ftruncate(fd, offset)


def _write_synced(path: Path, data: bytes) -> None:
    with _replacing(path) as fd:
        os.write(fd, data)


# --- restoring one -----------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    files: Files
    body: dict[str, Any]

    @property
    def machine(self) -> dict[str, Any]:
        return self.body["machine"]


def load(files: Files) -> Snapshot:
    """Read and check a state file; SnapshotError (one line) for anything wrong with it."""
    where = str(files.state)
    try:
        with open(files.state, "rb") as f:
            raw = f.read(MAX_STATE + 1)
    except OSError as e:
        raise SnapshotError(f"cannot read the snapshot {where}: {e.strerror}") from None
    try:
        document = json.loads(raw)
        body = document["body"]
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    except (ValueError, KeyError, TypeError):
        raise SnapshotError(f"{where} is not an elvisor snapshot, or it is truncated") from None
    if len(raw) > MAX_STATE or document.get("sha256") != digest:
        raise SnapshotError(f"{where} is corrupt: its contents do not match their checksum")
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise SnapshotError(f"{where} is not an elvisor snapshot")
    if body.get("version") != VERSION:
        raise SnapshotError(f"{where} is a snapshot of format version {body.get('version')}; "
                            f"this elvisor reads version {VERSION}")  # fmt: skip
    return Snapshot(files, body)


def config(snapshot: Snapshot) -> VmConfig:
    """The VmConfig that builds the snapshot's machine, after checking that this host can
    (page size, GIC, the disks unchanged). SnapshotError otherwise."""
    where = str(snapshot.files.state)
    try:
        host, m = snapshot.body["host"], snapshot.machine
        if host["page_size"] != mmap.PAGESIZE:
            raise SnapshotError(f"{where} was taken on a host with {host['page_size'] >> 10} KiB "
                                f"pages; this one has {mmap.PAGESIZE >> 10} KiB pages")  # fmt: skip
        _check_gic(where, int(m["gic"]))
        disks = []
        for disk in m["disks"]:
            path = Path(disk["path"])
            try:
                st = path.stat()
            except OSError:
                raise SnapshotError(f"{where}: its disk {path} is missing") from None
            if st.st_size != disk["size"] or st.st_mtime_ns != disk["mtime_ns"]:
                raise SnapshotError(f"{where}: its disk {path} changed after the snapshot was "
                                    "taken: restoring would corrupt it")  # fmt: skip
            disks.append(DiskConfig(path, bool(disk["readonly"])))
        nets = tuple(
            NetConfig(n["backend"], n["tap"], bytes.fromhex(n["mac"]) if n["mac"] else None,
                      n["vhost"]) for n in m["nets"]
        )  # fmt: skip
        return VmConfig(
            snapshot=snapshot.files.memory,
            cmdline=str(m["cmdline"]),
            memory=int(m["memory"]),
            cpus=int(m["cpus"]),
            gic=int(m["gic"]),
            pmu=bool(m["pmu"]),
            console=str(m["console"]),
            rng=bool(m["rng"]),
            disks=tuple(disks),
            nets=nets,
            vsock_cid=m["vsock_cid"],
            reboot=False,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise SnapshotError(
            f"{where} does not describe a machine elvisor can build ({e})"
        ) from None


def _check_gic(where: str, version: int) -> None:
    with open_kvm() as kvm, kvm.create_vm() as vm:
        if not gic.available(vm, version):
            raise SnapshotError(f"{where} is of a VM with a GICv{version}, which this host's KVM "
                                f"cannot give (it has GICv{5 - version} only)")  # fmt: skip


def restore(machine: Machine, snapshot: Snapshot) -> None:
    """Put the snapshot's state into `machine` (built from `config(snapshot)`, not yet run)."""
    where = str(snapshot.files.state)
    body = snapshot.body
    try:
        if [int(m) for m in snapshot.machine["mpidrs"]] != machine.mpidrs:
            raise SnapshotError(f"{where}: this host numbers the vCPUs differently")
        if int(body["host"]["ipa_bits"]) != machine.ipa_bits:
            bits = body["host"]["ipa_bits"]
            raise SnapshotError(f"{where} was taken with {bits}-bit guest physical addresses; "
                                f"this host gives {machine.ipa_bits}")  # fmt: skip
        for vcpu, state in zip(machine.vcpus, body["vcpus"], strict=True):
            _restore_registers(where, vcpu, state["regs"])
            vcpu.set_mp_state(int(state["mp_state"]))
        vgic_state.restore(machine.gic, machine.mpidrs, body["gic"])
        devices = body["devices"]
        machine.uart.set_state(devices["pl011"])
        machine.rtc.set_state(devices["pl031"])
        for slot, state in zip(machine.virtio, devices["virtio"], strict=True):
            slot.transport.set_state(state)
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, KvmError) as e:
        raise SnapshotError(f"{where}: its state cannot be put back: {e}") from None
    except Exception as e:  # (a queue the snapshot puts outside guest RAM, and the like)
        raise SnapshotError(f"{where}: its state cannot be put back: {e}") from None


def _restore_registers(where: str, vcpu: Any, registers: list[list[int]]) -> None:
    for reg_id, value in registers:
        try:
            vcpu.set_one_reg(int(reg_id), int(value))
        except KvmError:
            # a register KVM will not take: only a problem if it is not already the value
            if vcpu.get_one_reg(int(reg_id)) != int(value):
                raise SnapshotError(f"{where}: this host's KVM refuses vCPU register "
                                    f"{int(reg_id):#x} = {int(value):#x}") from None  # fmt: skip
