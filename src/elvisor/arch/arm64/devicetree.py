"""The guest's device tree, one function per node, from the placements that mapped the devices.

Bindings: Documentation/devicetree/bindings/ in Linux (arm/psci.yaml, timer/arm,arch_timer.yaml,
interrupt-controller/arm,gic(-v3).yaml, serial/pl011.yaml, rtc/arm,pl031.yaml).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from elvisor.arch.arm64 import layout
from elvisor.devices.bus import Placement
from elvisor.fdt import FdtWriter

GIC_FDT_IRQ_TYPE_SPI = 0
GIC_FDT_IRQ_TYPE_PPI = 1
IRQ_TYPE_EDGE_RISING = 1
IRQ_TYPE_LEVEL_HIGH = 4
APB_CLOCK_HZ = 24_000_000


@dataclass(frozen=True)
class DeviceTreeSpec:
    memory: list[tuple[int, int]]  # (guest physical address, size)
    mpidrs: list[int]  # one per vCPU, in vCPU order
    gic_version: int
    gic_regions: list[tuple[int, int]]  # v2: distributor, CPU interface; v3: distributor, redist
    devices: list[Placement]
    cmdline: str
    stdout: Placement | None
    initrd: tuple[int, int] | None  # (start, end)
    pmu: bool
    rng_seed: bytes
    kaslr_seed: int


@dataclass
class _Phandles:
    gic: int
    clock: int


def build(spec: DeviceTreeSpec) -> bytes:
    fdt = FdtWriter()
    ph = _Phandles(gic=fdt.alloc_phandle(), clock=fdt.alloc_phandle())
    with fdt.node(""):
        fdt.property_string("compatible", "linux,dummy-virt")
        fdt.property_string("model", "elvisor")
        fdt.property_u32("#address-cells", 2)
        fdt.property_u32("#size-cells", 2)
        fdt.property_u32("interrupt-parent", ph.gic)
        _chosen(fdt, spec)
        for base, size in spec.memory:
            _memory(fdt, base, size)
        _cpus(fdt, spec)
        _psci(fdt)
        _gic(fdt, spec, ph)
        _timer(fdt, spec)
        if spec.pmu:
            _pmu(fdt, spec)
        _apb_clock(fdt, ph)
        for device in spec.devices:
            write = _python_device if device.compatible else NODES[device.kind]
            write(fdt, device, ph)
    return fdt.finish()


def _reg(base: int, size: int) -> list[int]:
    return [base >> 32, base & 0xFFFF_FFFF, size >> 32, size & 0xFFFF_FFFF]


def _ppi_flags(spec: DeviceTreeSpec, trigger: int) -> int:
    """GICv2 PPI specifiers also say which CPUs the interrupt goes to (bits 8-15)."""
    if spec.gic_version == 2:
        return trigger | (((1 << len(spec.mpidrs)) - 1) << 8)
    return trigger


def _chosen(fdt: FdtWriter, spec: DeviceTreeSpec) -> None:
    with fdt.node("chosen"):
        fdt.property_string("bootargs", spec.cmdline)
        if spec.stdout:
            fdt.property_string("stdout-path", f"/{spec.stdout.name}")
        if spec.initrd:
            fdt.property_u64("linux,initrd-start", spec.initrd[0])
            fdt.property_u64("linux,initrd-end", spec.initrd[1])
        fdt.property("rng-seed", spec.rng_seed)
        fdt.property_u64("kaslr-seed", spec.kaslr_seed)


def _memory(fdt: FdtWriter, base: int, size: int) -> None:
    with fdt.node(f"memory@{base:x}"):
        fdt.property_string("device_type", "memory")
        fdt.property_cells("reg", _reg(base, size))


def _cpus(fdt: FdtWriter, spec: DeviceTreeSpec) -> None:
    with fdt.node("cpus"):
        fdt.property_u32("#address-cells", 2 if any(m >> 32 for m in spec.mpidrs) else 1)
        fdt.property_u32("#size-cells", 0)
        wide = any(m >> 32 for m in spec.mpidrs)
        for mpidr in spec.mpidrs:
            with fdt.node(f"cpu@{mpidr:x}"):
                fdt.property_string("device_type", "cpu")
                fdt.property_string("compatible", "arm,arm-v8")
                fdt.property_string("enable-method", "psci")
                if wide:
                    fdt.property_cells("reg", [mpidr >> 32, mpidr & 0xFFFF_FFFF])
                else:
                    fdt.property_u32("reg", mpidr)


def _psci(fdt: FdtWriter) -> None:
    with fdt.node("psci"):
        fdt.property_strings("compatible", ["arm,psci-1.0", "arm,psci-0.2"])
        fdt.property_string("method", "hvc")


def _gic(fdt: FdtWriter, spec: DeviceTreeSpec, ph: _Phandles) -> None:
    base = spec.gic_regions[0][0]
    with fdt.node(f"intc@{base:x}"):
        if spec.gic_version == 3:
            fdt.property_string("compatible", "arm,gic-v3")
            fdt.property_u32("#redistributor-regions", len(spec.gic_regions) - 1)
        else:
            fdt.property_string("compatible", "arm,cortex-a15-gic")
        fdt.property_u32("#interrupt-cells", 3)
        fdt.property_u32("#address-cells", 0)  # no interrupt-map refers to it
        fdt.property_empty("interrupt-controller")
        fdt.property_cells("reg", [c for b, s in spec.gic_regions for c in _reg(b, s)])
        fdt.property_u32("phandle", ph.gic)


def _timer(fdt: FdtWriter, spec: DeviceTreeSpec) -> None:
    flags = _ppi_flags(spec, IRQ_TYPE_LEVEL_HIGH)
    ppis = [
        layout.TIMER_PPI_SECURE_PHYS,
        layout.TIMER_PPI_NONSECURE_PHYS,
        layout.TIMER_PPI_VIRT,
        layout.TIMER_PPI_HYP,
    ]
    with fdt.node("timer"):
        fdt.property_string("compatible", "arm,armv8-timer")
        fdt.property_cells(
            "interrupts", [c for p in ppis for c in (GIC_FDT_IRQ_TYPE_PPI, p, flags)]
        )
        fdt.property_empty("always-on")


def _pmu(fdt: FdtWriter, spec: DeviceTreeSpec) -> None:
    with fdt.node("pmu"):
        fdt.property_string("compatible", "arm,armv8-pmuv3")
        flags = _ppi_flags(spec, IRQ_TYPE_LEVEL_HIGH)
        fdt.property_cells("interrupts", [GIC_FDT_IRQ_TYPE_PPI, layout.PMU_PPI, flags])


def _apb_clock(fdt: FdtWriter, ph: _Phandles) -> None:
    with fdt.node("apb-pclk"):
        fdt.property_string("compatible", "fixed-clock")
        fdt.property_u32("#clock-cells", 0)
        fdt.property_u32("clock-frequency", APB_CLOCK_HZ)
        fdt.property_string("clock-output-names", "clk24mhz")
        fdt.property_u32("phandle", ph.clock)


def _spi(device: Placement) -> list[int]:
    assert device.spi is not None, f"{device.name} has no interrupt"
    return [GIC_FDT_IRQ_TYPE_SPI, device.spi, IRQ_TYPE_LEVEL_HIGH]


def _pl011(fdt: FdtWriter, device: Placement, ph: _Phandles) -> None:
    with fdt.node(device.name):
        fdt.property_strings("compatible", ["arm,pl011", "arm,primecell"])
        fdt.property_cells("reg", _reg(device.base, device.size))
        fdt.property_cells("interrupts", _spi(device))
        fdt.property_cells("clocks", [ph.clock, ph.clock])
        fdt.property_strings("clock-names", ["uartclk", "apb_pclk"])


def _pl031(fdt: FdtWriter, device: Placement, ph: _Phandles) -> None:
    with fdt.node(device.name):
        fdt.property_strings("compatible", ["arm,pl031", "arm,primecell"])
        fdt.property_cells("reg", _reg(device.base, device.size))
        fdt.property_cells("interrupts", _spi(device))
        fdt.property_u32("clocks", ph.clock)
        fdt.property_string("clock-names", "apb_pclk")


def _virtio_mmio(fdt: FdtWriter, device: Placement, ph: _Phandles) -> None:
    with fdt.node(device.name):
        fdt.property_string("compatible", "virtio,mmio")
        fdt.property_cells("reg", _reg(device.base, device.size))
        fdt.property_cells("interrupts", _spi(device))
        fdt.property_empty("dma-coherent")


def _python_device(fdt: FdtWriter, device: Placement, ph: _Phandles) -> None:
    assert device.compatible is not None
    with fdt.node(device.name):
        fdt.property_string("compatible", device.compatible)
        fdt.property_cells("reg", _reg(device.base, device.size))
        fdt.property_cells("interrupts", _spi(device))


NODES: dict[str, Callable[[FdtWriter, Placement, _Phandles], None]] = {
    "pl011": _pl011,
    "pl031": _pl031,
    "virtio_mmio": _virtio_mmio,
}
