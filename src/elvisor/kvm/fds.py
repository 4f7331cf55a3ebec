"""Thin typed wrappers for KVM's file descriptors: system (/dev/kvm), VM, vCPU and device.

One method per ioctl, named after it, with no policy (rust-vmm's kvm-ioctls is the model).
A failing ioctl raises `KvmError`, which names the ioctl and the errno.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from ctypes import _CData as CData

from elvisor.errors import UserError
from elvisor.kvm.uapi import (
    KVM_CREATE_DEVICE_TEST,
    Cap,
    DeviceType,
    Ioctl,
    kvm_create_device,
    kvm_device_attr,
    kvm_enable_cap,
    kvm_guest_debug,
    kvm_ioeventfd,
    kvm_irq_level,
    kvm_irqfd,
    kvm_mp_state,
    kvm_one_reg,
    kvm_reg_list,
    kvm_run,
    kvm_userspace_memory_region,
    kvm_vcpu_init,
)

KVM_REG_SIZE_SHIFT = 52
KVM_REG_SIZE_MASK = 0x00F0000000000000


class KvmError(OSError):
    """An ioctl on a KVM file descriptor failed."""

    def __init__(self, ioctl: Ioctl, err: int) -> None:
        super().__init__(err, os.strerror(err))
        self.ioctl = ioctl

    def __str__(self) -> str:
        name = errno.errorcode.get(self.errno or 0, "?")
        return f"{self.ioctl.name} failed: {self.strerror} ({name})"


def reg_size(reg_id: int) -> int:
    """The size in bytes of a one-reg register, encoded in its id (KVM_REG_SIZE_*)."""
    return 1 << ((reg_id & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT)


class _Fd:
    """A file descriptor that ioctls go to; closed once, by `close()` or `with`."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ioctl(self, request: Ioctl, arg: int | ctypes.Structure | ctypes.c_int = 0) -> int:
        try:
            # a structure is passed as a writable buffer: the kernel's answer lands in it
            return fcntl.ioctl(self.fd, request, arg, True)
        except OSError as e:
            raise KvmError(request, e.errno or 0) from None


class _DeviceAttrs(_Fd):
    """KVM_{HAS,SET,GET}_DEVICE_ATTR, offered by VM, vCPU and device fds."""

    def has_device_attr(self, group: int, attr: int) -> bool:
        try:
            self._ioctl(Ioctl.KVM_HAS_DEVICE_ATTR, kvm_device_attr(0, group, attr, 0))
        except KvmError as e:
            if e.errno in (errno.ENXIO, errno.ENODEV, errno.EINVAL, errno.ENOTTY):
                return False
            raise
        return True

    def set_device_attr(self, group: int, attr: int, value: CData | None = None) -> None:
        """KVM_SET_DEVICE_ATTR; `value` (a ctypes object) is what the attribute points to."""
        addr = 0 if value is None else ctypes.addressof(value)
        self._ioctl(Ioctl.KVM_SET_DEVICE_ATTR, kvm_device_attr(0, group, attr, addr))

    def get_device_attr(self, group: int, attr: int, value: CData) -> None:
        """KVM_GET_DEVICE_ATTR, into `value` (a ctypes object of the attribute's type)."""
        req = kvm_device_attr(0, group, attr, ctypes.addressof(value))
        self._ioctl(Ioctl.KVM_GET_DEVICE_ATTR, req)


class Kvm(_Fd):
    """The system fd, /dev/kvm."""

    def __init__(self, path: str = "/dev/kvm") -> None:
        super().__init__(os.open(path, os.O_RDWR | os.O_CLOEXEC))

    def get_api_version(self) -> int:
        return self._ioctl(Ioctl.KVM_GET_API_VERSION)

    def check_extension(self, cap: Cap | int) -> int:
        return self._ioctl(Ioctl.KVM_CHECK_EXTENSION, cap)

    def get_vcpu_mmap_size(self) -> int:
        return self._ioctl(Ioctl.KVM_GET_VCPU_MMAP_SIZE)

    def create_vm(self, vm_type: int = 0) -> Vm:
        """KVM_CREATE_VM; `vm_type` is 0 or KVM_VM_TYPE_ARM_IPA_SIZE(bits)."""
        return Vm(self._ioctl(Ioctl.KVM_CREATE_VM, vm_type), self.get_vcpu_mmap_size())


class Vm(_DeviceAttrs):
    """A VM fd."""

    def __init__(self, fd: int, vcpu_mmap_size: int) -> None:
        super().__init__(fd)
        self.vcpu_mmap_size = vcpu_mmap_size

    def check_extension(self, cap: Cap | int) -> int:
        return self._ioctl(Ioctl.KVM_CHECK_EXTENSION, cap)

    def create_vcpu(self, vcpu_id: int) -> Vcpu:
        return Vcpu(self._ioctl(Ioctl.KVM_CREATE_VCPU, vcpu_id), self.vcpu_mmap_size)

    def set_user_memory_region(
        self, slot: int, guest_phys_addr: int, memory_size: int, userspace_addr: int, flags: int = 0
    ) -> None:
        region = kvm_userspace_memory_region(
            slot, flags, guest_phys_addr, memory_size, userspace_addr
        )
        self._ioctl(Ioctl.KVM_SET_USER_MEMORY_REGION, region)

    def arm_preferred_target(self) -> kvm_vcpu_init:
        init = kvm_vcpu_init()
        self._ioctl(Ioctl.KVM_ARM_PREFERRED_TARGET, init)
        return init

    def create_device(self, dev_type: DeviceType | int, test: bool = False) -> Device | None:
        """KVM_CREATE_DEVICE; with `test`, only asks whether the type can be created (None)."""
        req = kvm_create_device(dev_type, 0, KVM_CREATE_DEVICE_TEST if test else 0)
        self._ioctl(Ioctl.KVM_CREATE_DEVICE, req)
        return None if test else Device(req.fd)

    def irq_line(self, irq: int, level: int) -> None:
        self._ioctl(Ioctl.KVM_IRQ_LINE, kvm_irq_level(irq, level))

    def irqfd(self, fd: int, gsi: int, flags: int = 0, resamplefd: int = 0) -> None:
        self._ioctl(Ioctl.KVM_IRQFD, kvm_irqfd(fd, gsi, flags, resamplefd))

    def ioeventfd(
        self, fd: int, addr: int, length: int, datamatch: int = 0, flags: int = 0
    ) -> None:
        self._ioctl(Ioctl.KVM_IOEVENTFD, kvm_ioeventfd(datamatch, addr, length, fd, flags))

    def enable_cap(self, cap: Cap | int, *args: int, flags: int = 0) -> None:
        req = kvm_enable_cap(cap, flags)
        for i, value in enumerate(args):
            req.args[i] = value
        self._ioctl(Ioctl.KVM_ENABLE_CAP, req)


class Vcpu(_DeviceAttrs):
    """A vCPU fd, with its shared `kvm_run` page."""

    def __init__(self, fd: int, mmap_size: int) -> None:
        super().__init__(fd)
        try:
            self._mmap = mmap.mmap(fd, mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            os.close(fd)
            raise
        self.kvm_run: kvm_run | None = kvm_run.from_buffer(self._mmap)
        reason = kvm_run.exit_reason.offset
        self._exit_reason: memoryview | None = memoryview(self._mmap)[reason : reason + 4].cast("I")
        self._run_request = int(Ioctl.KVM_RUN)

    def close(self) -> None:
        if not self.closed:
            self.kvm_run = None  # drop our views of the page before unmapping it
            if self._exit_reason is not None:
                self._exit_reason.release()
                self._exit_reason = None
            with contextlib.suppress(BufferError):  # someone still holds a view of kvm_run:
                self._mmap.close()  # the page is unmapped when the last view goes

        super().close()

    def run(self) -> int:
        """KVM_RUN; returns kvm_run.exit_reason. Releases the GIL while the guest runs.

        The exit path of every vCPU: it reads the reason through a memoryview, not ctypes.
        KvmError with EINTR means the vCPU was kicked (a signal, or `set_immediate_exit`)."""
        try:
            fcntl.ioctl(self._fd, self._run_request, 0)
        except OSError as e:
            raise KvmError(Ioctl.KVM_RUN, e.errno or 0) from None
        assert self._exit_reason is not None
        return self._exit_reason[0]

    def set_immediate_exit(self, on: bool) -> None:
        """kvm_run.immediate_exit: while set, KVM_RUN completes a pending MMIO access (so the
        vCPU's state is whole) and returns EINTR at once, without entering the guest."""
        assert self.kvm_run is not None
        self.kvm_run.immediate_exit = int(on)

    def arm_vcpu_init(self, init: kvm_vcpu_init) -> None:
        self._ioctl(Ioctl.KVM_ARM_VCPU_INIT, init)

    def arm_vcpu_finalize(self, feature: int) -> None:
        self._ioctl(Ioctl.KVM_ARM_VCPU_FINALIZE, ctypes.c_int(feature))

    def set_guest_debug(self, debug: kvm_guest_debug) -> None:
        """KVM_SET_GUEST_DEBUG: what traps to the VMM (breakpoints, steps, watchpoints)."""
        self._ioctl(Ioctl.KVM_SET_GUEST_DEBUG, debug)

    def get_one_reg(self, reg_id: int) -> int:
        buf = (ctypes.c_uint8 * reg_size(reg_id))()
        self._ioctl(Ioctl.KVM_GET_ONE_REG, kvm_one_reg(reg_id, ctypes.addressof(buf)))
        return int.from_bytes(bytes(buf), "little")

    def set_one_reg(self, reg_id: int, value: int) -> None:
        size = reg_size(reg_id)
        buf = (ctypes.c_uint8 * size).from_buffer_copy(value.to_bytes(size, "little"))
        self._ioctl(Ioctl.KVM_SET_ONE_REG, kvm_one_reg(reg_id, ctypes.addressof(buf)))

    def get_reg_list(self) -> list[int]:
        probe = kvm_reg_list(0)
        try:
            self._ioctl(Ioctl.KVM_GET_REG_LIST, probe)
        except KvmError as e:
            if e.errno != errno.E2BIG:
                raise
        n = int(probe.n)

        class _RegList(ctypes.Structure):
            _fields_ = [("n", ctypes.c_uint64), ("reg", ctypes.c_uint64 * n)]

        full = _RegList(n)
        # the request number encodes only the header's size, as in kvm.h
        self._ioctl(Ioctl.KVM_GET_REG_LIST, full)
        return [int(r) for r in full.reg[: full.n]]

    def get_mp_state(self) -> int:
        state = kvm_mp_state()
        self._ioctl(Ioctl.KVM_GET_MP_STATE, state)
        return int(state.mp_state)

    def set_mp_state(self, mp_state: int) -> None:
        self._ioctl(Ioctl.KVM_SET_MP_STATE, kvm_mp_state(mp_state))


class Device(_DeviceAttrs):
    """A device fd from KVM_CREATE_DEVICE (for example the in-kernel vGIC)."""


ARM64_MACHINES = ("aarch64", "arm64")


def open_kvm(path: str = "/dev/kvm", machine: str | None = None) -> Kvm:
    """/dev/kvm, or a UserError saying why it cannot be used and what to do."""
    machine = machine or os.uname().machine
    if machine not in ARM64_MACHINES:
        raise UserError(
            f"this host is {machine}, and elvisor runs arm64 guests on an arm64 host's KVM: "
            "here, use the emulated arm64 host, e.g. `elvisor lab run -- elvisor kvm info`"
        )
    try:
        return Kvm(path)
    except FileNotFoundError:
        raise UserError(
            f"{path} does not exist: this arm64 kernel has no KVM (or it is not enabled); "
            "use a kernel with KVM and boot it at EL2, or use `elvisor lab run`"
        ) from None
    except PermissionError:
        raise UserError(
            f"no permission to open {path}: join the kvm group "
            "(sudo usermod -aG kvm $USER, then log in again) or run as root"
        ) from None
    except OSError as e:
        raise UserError(f"cannot open {path}: {e.strerror}") from None
