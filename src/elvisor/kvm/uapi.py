"""KVM's user-space API for arm64: constants, structures and ioctl numbers.

Names are those of include/uapi/linux/kvm.h and arch/arm64/include/uapi/asm/kvm.h, so that
they can be looked up in the kernel's documentation (Documentation/virt/kvm/api.rst).
ioctl numbers are computed from the structures' sizes with the _IOC encoding; a unit test
checks them, and the structures' sizes and offsets, against the arm64 kernel headers.
"""

import ctypes
from enum import IntEnum, IntFlag

from elvisor.kvm.ioctl import _IO, _IOR, _IOW, _IOWR

KVMIO = 0xAE
KVM_API_VERSION = 12

u8 = ctypes.c_uint8
u16 = ctypes.c_uint16
u32 = ctypes.c_uint32
s32 = ctypes.c_int32
u64 = ctypes.c_uint64


class kvm_userspace_memory_region(ctypes.Structure):
    _fields_ = [
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),
        ("userspace_addr", u64),
    ]


class kvm_vcpu_init(ctypes.Structure):
    _fields_ = [("target", u32), ("features", u32 * 7)]


class kvm_one_reg(ctypes.Structure):
    _fields_ = [("id", u64), ("addr", u64)]


class kvm_create_device(ctypes.Structure):
    _fields_ = [("type", u32), ("fd", u32), ("flags", u32)]


class kvm_device_attr(ctypes.Structure):
    _fields_ = [("flags", u32), ("group", u32), ("attr", u64), ("addr", u64)]


class kvm_irq_level(ctypes.Structure):
    _fields_ = [("irq", u32), ("level", u32)]


class kvm_irqfd(ctypes.Structure):
    _fields_ = [
        ("fd", u32),
        ("gsi", u32),
        ("flags", u32),
        ("resamplefd", u32),
        ("pad", u8 * 16),
    ]


class kvm_ioeventfd(ctypes.Structure):
    _fields_ = [
        ("datamatch", u64),
        ("addr", u64),
        ("len", u32),
        ("fd", s32),
        ("flags", u32),
        ("pad", u8 * 36),
    ]


class kvm_enable_cap(ctypes.Structure):
    _fields_ = [("cap", u32), ("flags", u32), ("args", u64 * 4), ("pad", u8 * 64)]


class kvm_mp_state(ctypes.Structure):
    _fields_ = [("mp_state", u32)]


class kvm_reg_list(ctypes.Structure):
    """The fixed header of struct kvm_reg_list; `reg[n]` follows it in memory."""

    _fields_ = [("n", u64)]


class kvm_smccc_filter(ctypes.Structure):
    _fields_ = [("base", u32), ("nr_functions", u32), ("action", u8), ("pad", u8 * 15)]


KVM_ARM_MAX_DBG_REGS = 16


class kvm_guest_debug(ctypes.Structure):
    """KVM_SET_GUEST_DEBUG: control (KVM_GUESTDBG_*), then arm64's kvm_guest_debug_arch."""

    _fields_ = [
        ("control", u32),
        ("pad", u32),
        ("dbg_bcr", u64 * KVM_ARM_MAX_DBG_REGS),
        ("dbg_bvr", u64 * KVM_ARM_MAX_DBG_REGS),
        ("dbg_wcr", u64 * KVM_ARM_MAX_DBG_REGS),
        ("dbg_wvr", u64 * KVM_ARM_MAX_DBG_REGS),
    ]


KVM_GUESTDBG_ENABLE = 1 << 0
KVM_GUESTDBG_SINGLESTEP = 1 << 1
KVM_GUESTDBG_USE_SW_BP = 1 << 16  # a BRK exits to the VMM (arm64)
KVM_GUESTDBG_USE_HW = 1 << 17  # the dbg_* registers are the guest's while it runs (arm64)


# --- struct kvm_run: the page shared with the kernel, mmap()ed from the vCPU fd -------------


class _kvm_run_mmio(ctypes.Structure):
    _fields_ = [("phys_addr", u64), ("data", u8 * 8), ("len", u32), ("is_write", u8)]


class _kvm_run_hypercall(ctypes.Structure):
    _fields_ = [("nr", u64), ("args", u64 * 6), ("ret", u64), ("flags", u64)]


class _kvm_run_system_event(ctypes.Structure):
    _fields_ = [("type", u32), ("ndata", u32), ("data", u64 * 16)]


class _kvm_run_internal(ctypes.Structure):
    _fields_ = [("suberror", u32), ("ndata", u32), ("data", u64 * 16)]


class _kvm_run_fail_entry(ctypes.Structure):
    _fields_ = [("hardware_entry_failure_reason", u64), ("cpu", u32)]


class _kvm_run_hw(ctypes.Structure):
    _fields_ = [("hardware_exit_reason", u64)]


class _kvm_run_debug(ctypes.Structure):
    _fields_ = [("hsr", u32), ("hsr_high", u32), ("far", u64)]  # kvm_debug_exit_arch


class _kvm_run_arm_nisv(ctypes.Structure):
    _fields_ = [("esr_iss", u64), ("fault_ipa", u64)]


class _kvm_run_exit(ctypes.Union):
    _fields_ = [
        ("hw", _kvm_run_hw),
        ("fail_entry", _kvm_run_fail_entry),
        ("debug", _kvm_run_debug),
        ("mmio", _kvm_run_mmio),
        ("hypercall", _kvm_run_hypercall),
        ("internal", _kvm_run_internal),
        ("system_event", _kvm_run_system_event),
        ("arm_nisv", _kvm_run_arm_nisv),
        ("padding", ctypes.c_char * 256),
    ]


SYNC_REGS_SIZE_BYTES = 2048


class kvm_run(ctypes.Structure):
    _fields_ = [
        ("request_interrupt_window", u8),
        ("immediate_exit", u8),
        ("padding1", u8 * 6),
        ("exit_reason", u32),
        ("ready_for_interrupt_injection", u8),
        ("if_flag", u8),
        ("flags", u16),
        ("cr8", u64),
        ("apic_base", u64),
        ("exit", _kvm_run_exit),  # the anonymous union of kvm.h
        ("kvm_valid_regs", u64),
        ("kvm_dirty_regs", u64),
        ("s", ctypes.c_char * SYNC_REGS_SIZE_BYTES),
    ]


# where the data of an MMIO exit sits in the kvm_run page
KVM_RUN_MMIO_DATA_OFFSET = kvm_run.exit.offset + _kvm_run_mmio.data.offset


# --- constants -------------------------------------------------------------------------------


class Cap(IntEnum):
    """KVM_CAP_* numbers, for KVM_CHECK_EXTENSION and KVM_ENABLE_CAP."""

    KVM_CAP_IRQCHIP = 0
    KVM_CAP_USER_MEMORY = 3
    KVM_CAP_NR_VCPUS = 9
    KVM_CAP_MP_STATE = 14
    KVM_CAP_COALESCED_MMIO = 15
    KVM_CAP_SYNC_MMU = 16
    KVM_CAP_SET_GUEST_DEBUG = 23
    KVM_CAP_IRQFD = 32
    KVM_CAP_IOEVENTFD = 36
    KVM_CAP_MAX_VCPUS = 66
    KVM_CAP_ONE_REG = 70
    KVM_CAP_SIGNAL_MSI = 77
    KVM_CAP_READONLY_MEM = 81
    KVM_CAP_IRQFD_RESAMPLE = 82
    KVM_CAP_ARM_PSCI = 87
    KVM_CAP_DEVICE_CTRL = 89
    KVM_CAP_ARM_EL1_32BIT = 93
    KVM_CAP_VM_ATTRIBUTES = 101
    KVM_CAP_ARM_PSCI_0_2 = 102
    KVM_CAP_GUEST_DEBUG_HW_BPS = 119
    KVM_CAP_GUEST_DEBUG_HW_WPS = 120
    KVM_CAP_ARM_PMU_V3 = 126
    KVM_CAP_IMMEDIATE_EXIT = 136
    KVM_CAP_ARM_USER_IRQ = 144
    KVM_CAP_ARM_VM_IPA_SIZE = 165
    KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168
    KVM_CAP_ARM_SVE = 170
    KVM_CAP_ARM_PTRAUTH_ADDRESS = 171
    KVM_CAP_ARM_PTRAUTH_GENERIC = 172
    KVM_CAP_ARM_IRQ_LINE_LAYOUT_2 = 174
    KVM_CAP_ARM_NISV_TO_USER = 177
    KVM_CAP_DIRTY_LOG_RING = 192
    KVM_CAP_EXIT_HYPERCALL = 201
    KVM_CAP_ARM_MTE = 205
    KVM_CAP_ARM_SYSTEM_SUSPEND = 216


class ExitReason(IntEnum):
    """kvm_run.exit_reason values (KVM_EXIT_*)."""

    KVM_EXIT_UNKNOWN = 0
    KVM_EXIT_EXCEPTION = 1
    KVM_EXIT_IO = 2
    KVM_EXIT_HYPERCALL = 3
    KVM_EXIT_DEBUG = 4
    KVM_EXIT_HLT = 5
    KVM_EXIT_MMIO = 6
    KVM_EXIT_IRQ_WINDOW_OPEN = 7
    KVM_EXIT_SHUTDOWN = 8
    KVM_EXIT_FAIL_ENTRY = 9
    KVM_EXIT_INTR = 10
    KVM_EXIT_INTERNAL_ERROR = 17
    KVM_EXIT_SYSTEM_EVENT = 24
    KVM_EXIT_ARM_NISV = 28
    KVM_EXIT_DIRTY_RING_FULL = 31
    KVM_EXIT_MEMORY_FAULT = 39


class SystemEvent(IntEnum):
    """kvm_run.system_event.type values (KVM_SYSTEM_EVENT_*)."""

    KVM_SYSTEM_EVENT_SHUTDOWN = 1
    KVM_SYSTEM_EVENT_RESET = 2
    KVM_SYSTEM_EVENT_CRASH = 3
    KVM_SYSTEM_EVENT_WAKEUP = 4
    KVM_SYSTEM_EVENT_SUSPEND = 5


class DeviceType(IntEnum):
    """enum kvm_device_type, for KVM_CREATE_DEVICE."""

    KVM_DEV_TYPE_VFIO = 4
    KVM_DEV_TYPE_ARM_VGIC_V2 = 5
    KVM_DEV_TYPE_ARM_VGIC_V3 = 7
    KVM_DEV_TYPE_ARM_VGIC_ITS = 8
    KVM_DEV_TYPE_ARM_PV_TIME = 10


KVM_CREATE_DEVICE_TEST = 1


class VcpuFeature(IntEnum):
    """Bit numbers in kvm_vcpu_init.features[0] (KVM_ARM_VCPU_*)."""

    KVM_ARM_VCPU_POWER_OFF = 0
    KVM_ARM_VCPU_EL1_32BIT = 1
    KVM_ARM_VCPU_PSCI_0_2 = 2
    KVM_ARM_VCPU_PMU_V3 = 3
    KVM_ARM_VCPU_SVE = 4
    KVM_ARM_VCPU_PTRAUTH_ADDRESS = 5
    KVM_ARM_VCPU_PTRAUTH_GENERIC = 6


class MemFlag(IntFlag):
    """kvm_userspace_memory_region.flags."""

    KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
    KVM_MEM_READONLY = 1 << 1


class MpState(IntEnum):
    """kvm_mp_state.mp_state values used on arm64."""

    KVM_MP_STATE_RUNNABLE = 0
    KVM_MP_STATE_STOPPED = 5
    KVM_MP_STATE_SUSPENDED = 10


# KVM_IRQFD and KVM_IOEVENTFD flags
KVM_IRQFD_FLAG_DEASSIGN = 1 << 0
KVM_IRQFD_FLAG_RESAMPLE = 1 << 1
KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0
KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2

# VM-level device attributes (KVM_HAS/SET_DEVICE_ATTR on the VM fd, arm64)
KVM_ARM_VM_SMCCC_CTRL = 0
KVM_ARM_VM_SMCCC_FILTER = 0
KVM_SMCCC_FILTER_FWD_TO_USER = 2  # enum kvm_smccc_filter_action
KVM_HYPERCALL_EXIT_SMC = 1 << 0  # kvm_run.hypercall.flags

# the vGIC device (KVM_DEV_TYPE_ARM_VGIC_V2/V3) and its attributes
KVM_DEV_ARM_VGIC_GRP_ADDR = 0
KVM_DEV_ARM_VGIC_GRP_NR_IRQS = 3
KVM_DEV_ARM_VGIC_GRP_CTRL = 4
KVM_DEV_ARM_VGIC_CTRL_INIT = 0
KVM_VGIC_V2_ADDR_TYPE_DIST = 0
KVM_VGIC_V2_ADDR_TYPE_CPU = 1
KVM_VGIC_V3_ADDR_TYPE_DIST = 2
KVM_VGIC_V3_ADDR_TYPE_REDIST = 3

# vCPU attributes: the PMU
KVM_ARM_VCPU_PMU_V3_CTRL = 0
KVM_ARM_VCPU_PMU_V3_IRQ = 0
KVM_ARM_VCPU_PMU_V3_INIT = 1

# KVM_IRQ_LINE's irq field on arm64: type (bits 24-27), vCPU (16-23), number (0-15)
KVM_ARM_IRQ_TYPE_SHIFT = 24
KVM_ARM_IRQ_TYPE_CPU = 0
KVM_ARM_IRQ_TYPE_SPI = 1
KVM_ARM_IRQ_TYPE_PPI = 2


def KVM_VM_TYPE_ARM_IPA_SIZE(bits: int) -> int:
    """The `type` argument of KVM_CREATE_VM asking for a guest physical address size."""
    return bits & 0xFF


def _sizeof(struct: type[ctypes.Structure]) -> int:
    return ctypes.sizeof(struct)


class Ioctl(IntEnum):
    """ioctl request numbers, named as in linux/kvm.h."""

    # system (/dev/kvm)
    KVM_GET_API_VERSION = _IO(KVMIO, 0x00)
    KVM_CREATE_VM = _IO(KVMIO, 0x01)
    KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03)
    KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04)
    # VM
    KVM_CREATE_VCPU = _IO(KVMIO, 0x41)
    KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, _sizeof(kvm_userspace_memory_region))
    KVM_IRQ_LINE = _IOW(KVMIO, 0x61, _sizeof(kvm_irq_level))
    KVM_IRQFD = _IOW(KVMIO, 0x76, _sizeof(kvm_irqfd))
    KVM_IOEVENTFD = _IOW(KVMIO, 0x79, _sizeof(kvm_ioeventfd))
    KVM_ENABLE_CAP = _IOW(KVMIO, 0xA3, _sizeof(kvm_enable_cap))
    KVM_ARM_PREFERRED_TARGET = _IOR(KVMIO, 0xAF, _sizeof(kvm_vcpu_init))
    KVM_CREATE_DEVICE = _IOWR(KVMIO, 0xE0, _sizeof(kvm_create_device))
    # VM, vCPU and device
    KVM_SET_DEVICE_ATTR = _IOW(KVMIO, 0xE1, _sizeof(kvm_device_attr))
    KVM_GET_DEVICE_ATTR = _IOW(KVMIO, 0xE2, _sizeof(kvm_device_attr))
    KVM_HAS_DEVICE_ATTR = _IOW(KVMIO, 0xE3, _sizeof(kvm_device_attr))
    # vCPU
    KVM_RUN = _IO(KVMIO, 0x80)
    KVM_GET_MP_STATE = _IOR(KVMIO, 0x98, _sizeof(kvm_mp_state))
    KVM_SET_MP_STATE = _IOW(KVMIO, 0x99, _sizeof(kvm_mp_state))
    KVM_SET_GUEST_DEBUG = _IOW(KVMIO, 0x9B, _sizeof(kvm_guest_debug))
    KVM_GET_ONE_REG = _IOW(KVMIO, 0xAB, _sizeof(kvm_one_reg))
    KVM_SET_ONE_REG = _IOW(KVMIO, 0xAC, _sizeof(kvm_one_reg))
    KVM_ARM_VCPU_INIT = _IOW(KVMIO, 0xAE, _sizeof(kvm_vcpu_init))
    KVM_GET_REG_LIST = _IOWR(KVMIO, 0xB0, _sizeof(kvm_reg_list))
    KVM_ARM_VCPU_FINALIZE = _IOW(KVMIO, 0xC2, ctypes.sizeof(ctypes.c_int))
