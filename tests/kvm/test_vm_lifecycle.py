"""The first layer of KVM bindings against the real KVM: VMs, memory, vCPUs, devices."""

import ctypes
import errno
import mmap

import pytest

from elvisor.kvm import (
    Cap,
    DeviceType,
    ExitReason,
    Kvm,
    KvmError,
    VcpuFeature,
)

pytestmark = pytest.mark.every_host

# arm64 core register ids: KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | offset/4
# of the field in struct kvm_regs (user_pt_regs: regs[31], sp, pc, pstate). Literal values,
# from arch/arm64/include/uapi/asm/kvm.h, not from the code under test.
REG_X0 = 0x6030_0000_0010_0000
REG_PC = 0x6030_0000_0010_0040
REG_PSTATE = 0x6030_0000_0010_0042


@pytest.fixture
def kvm():
    with Kvm() as k:
        yield k


def test_vm_and_vcpu_created_and_destroyed(kvm: Kvm) -> None:
    for _ in range(3):  # the fds really go away: again and again
        vm = kvm.create_vm()
        vcpu = vm.create_vcpu(0)
        assert vcpu.kvm_run is not None
        vcpu.close()
        vm.close()
        assert vm.closed and vcpu.closed


def test_vcpu_init_and_registers(kvm: Kvm) -> None:
    with kvm.create_vm() as vm, vm.create_vcpu(0) as vcpu:
        init = vm.arm_preferred_target()
        init.features[0] |= 1 << VcpuFeature.KVM_ARM_VCPU_PSCI_0_2
        vcpu.arm_vcpu_init(init)
        vcpu.set_one_reg(REG_PC, 0x4008_0000)
        vcpu.set_one_reg(REG_X0, 0x1234_5678_9ABC_DEF0)
        assert vcpu.get_one_reg(REG_PC) == 0x4008_0000
        assert vcpu.get_one_reg(REG_X0) == 0x1234_5678_9ABC_DEF0
        assert vcpu.get_one_reg(REG_PSTATE) & 0xF == 0x5  # reset state: EL1h
        regs = vcpu.get_reg_list()
        assert REG_PC in regs and len(regs) > 100


def test_guest_runs_and_exits_on_mmio(kvm: Kvm) -> None:
    """A two-instruction guest: store to an unmapped address, KVM_EXIT_MMIO comes back."""
    ram_base, mmio_addr = 0x4000_0000, 0x0900_0000
    # str w1, [x0] ; b .
    code = bytes.fromhex("010000b9") + bytes.fromhex("00000014")
    size = mmap.PAGESIZE
    ram = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    ram[: len(code)] = code
    anchor = ctypes.c_char.from_buffer(ram)  # keeps the mapping alive while the guest uses it
    address = ctypes.addressof(anchor)
    with kvm.create_vm() as vm, vm.create_vcpu(0) as vcpu:
        vm.set_user_memory_region(0, ram_base, size, address)
        vcpu.arm_vcpu_init(vm.arm_preferred_target())
        vcpu.set_one_reg(REG_PC, ram_base)
        vcpu.set_one_reg(REG_X0, mmio_addr)
        vcpu.set_one_reg(REG_X0 + 2, 0xCAFE)  # x1
        assert vcpu.run() == ExitReason.KVM_EXIT_MMIO
        assert vcpu.kvm_run is not None
        mmio = vcpu.kvm_run.exit.mmio
        assert mmio.phys_addr == mmio_addr
        assert mmio.len == 4 and mmio.is_write
        assert bytes(mmio.data[:4]) == (0xCAFE).to_bytes(4, "little")


def test_vgic_device_created(kvm: Kvm) -> None:
    with kvm.create_vm() as vm:
        created = []
        for dev_type in (DeviceType.KVM_DEV_TYPE_ARM_VGIC_V3, DeviceType.KVM_DEV_TYPE_ARM_VGIC_V2):
            try:
                device = vm.create_device(dev_type)
            except KvmError:
                continue
            assert device is not None and device.fd >= 0
            created.append(dev_type)
            device.close()
            break
        assert created, "neither vGICv3 nor vGICv2 could be created"


def test_errors_name_the_ioctl(kvm: Kvm) -> None:
    with kvm.create_vm() as vm:
        max_vcpu_id = vm.check_extension(Cap.KVM_CAP_MAX_VCPUS)
        with pytest.raises(KvmError) as caught:
            vm.create_vcpu(max_vcpu_id + 1000)
    assert caught.value.errno == errno.EINVAL
    assert "KVM_CREATE_VCPU" in str(caught.value)
    assert "EINVAL" in str(caught.value)
