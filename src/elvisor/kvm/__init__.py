"""KVM bindings, first layer: ioctls on the system, VM, vCPU and device fds."""

from elvisor.kvm.fds import Device, Kvm, KvmError, Vcpu, Vm, reg_size
from elvisor.kvm.uapi import (
    KVM_API_VERSION,
    KVM_VM_TYPE_ARM_IPA_SIZE,
    Cap,
    DeviceType,
    ExitReason,
    Ioctl,
    MemFlag,
    MpState,
    SystemEvent,
    VcpuFeature,
)

__all__ = [
    "KVM_API_VERSION",
    "KVM_VM_TYPE_ARM_IPA_SIZE",
    "Cap",
    "Device",
    "DeviceType",
    "ExitReason",
    "Ioctl",
    "Kvm",
    "KvmError",
    "MemFlag",
    "MpState",
    "SystemEvent",
    "Vcpu",
    "VcpuFeature",
    "Vm",
    "reg_size",
]
