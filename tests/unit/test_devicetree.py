"""The guest's device tree, decompiled and checked by dtc (an independent reader)."""

import shutil
import subprocess

import pytest

from elvisor.arch.arm64 import devicetree, layout
from elvisor.devices.bus import Placement
from elvisor.fdt import FdtError, FdtWriter

UART = Placement("pl011", 0x0900_0000, 0x1000, 1)
RTC = Placement("pl031", 0x0901_0000, 0x1000, 2)


def spec(gic: int, cpus: int = 2, initrd=(0x4820_0000, 0x4830_0000)) -> devicetree.DeviceTreeSpec:
    regions = (
        [(layout.GIC_DIST_BASE, layout.GIC_DIST_SIZE), (layout.GIC_CPU_BASE, layout.GIC_CPU_SIZE)]
        if gic == 2
        else [
            (layout.GIC_DIST_BASE, layout.GIC_DIST_SIZE),
            (layout.GIC_REDIST_BASE, cpus * layout.GIC_REDIST_SIZE_PER_CPU),
        ]
    )
    return devicetree.DeviceTreeSpec(
        memory=[(0x4000_0000, 512 << 20)],
        mpidrs=[0x8000_0000 | i for i in range(cpus)],
        gic_version=gic,
        gic_regions=regions,
        devices=[UART, RTC, Placement("virtio_mmio", 0x0A00_0000, 0x200, 16)],
        cmdline='console=ttyAMA0 root=/dev/vda "quoted"',
        stdout=UART,
        initrd=initrd,
        pmu=True,
        rng_seed=bytes(range(32)),
        kaslr_seed=0x1122_3344_5566_7788,
    )


def decompile(blob: bytes, tmp_path) -> str:
    dtc = shutil.which("dtc")
    assert dtc, "dtc is missing: apt-get install device-tree-compiler"
    path = tmp_path / "guest.dtb"
    path.write_bytes(blob)
    result = subprocess.run(
        [dtc, "-I", "dtb", "-O", "dts", str(path)], capture_output=True, text=True, check=True
    )
    assert result.stderr == "", result.stderr  # no warnings at all
    return result.stdout.replace('", "', "\\0")  # dtc 1.7 splits string lists, 1.6 did not


@pytest.mark.parametrize("gic", [2, 3])
def test_dtc_accepts_it_without_warnings(gic: int, tmp_path) -> None:
    dts = decompile(devicetree.build(spec(gic)), tmp_path)
    assert 'bootargs = "console=ttyAMA0 root=/dev/vda \\"quoted\\"";' in dts
    assert 'stdout-path = "/pl011@9000000";' in dts
    assert "linux,initrd-start = <0x00 0x48200000>;" in dts
    assert "memory@40000000 {" in dts and "reg = <0x00 0x40000000 0x00 0x20000000>;" in dts
    assert 'method = "hvc";' in dts
    assert "cpu@80000001 {" in dts
    assert 'compatible = "arm,pl031\\0arm,primecell";' in dts
    assert 'compatible = "virtio,mmio";' in dts and "interrupts = <0x00 0x10 0x04>;" in dts
    assert "kaslr-seed = <0x11223344 0x55667788>;" in dts


def test_gic_v3_regions_and_timer(tmp_path) -> None:
    dts = decompile(devicetree.build(spec(3, cpus=4)), tmp_path)
    assert 'compatible = "arm,gic-v3";' in dts
    assert "reg = <0x00 0x8000000 0x00 0x10000 0x00 0x80a0000 0x00 0x80000>;" in dts
    # secure phys 13, phys 14, virt 11, hyp 10: level-high PPIs
    assert "interrupts = <0x01 0x0d 0x04 0x01 0x0e 0x04 0x01 0x0b 0x04 0x01 0x0a 0x04>;" in dts


def test_gic_v2_ppis_name_their_cpus(tmp_path) -> None:
    dts = decompile(devicetree.build(spec(2, cpus=2)), tmp_path)
    assert 'compatible = "arm,cortex-a15-gic";' in dts
    assert "reg = <0x00 0x8000000 0x00 0x10000 0x00 0x8010000 0x00 0x2000>;" in dts
    assert "0x01 0x0b 0x304" in dts  # virtual timer to CPUs 0 and 1, level high


def test_golden_bytes() -> None:
    w = FdtWriter()
    with w.node(""):
        w.property_u32("a", 1)
    blob = w.finish()
    assert blob.hex() == (
        "d00dfeed"
        "0000005a"
        "00000038"
        "00000058"
        "00000028"
        "00000011"
        "00000010"
        "00000000"
        "00000002"
        "00000020"
        "0000000000000000"
        "0000000000000000"  # the reservation map's terminator
        "00000001"
        "00000000"  # FDT_BEGIN_NODE ""
        "00000003"
        "00000004"
        "00000000"
        "00000001"  # FDT_PROP len 4, name "a", <1>
        "00000002"
        "00000009"  # FDT_END_NODE, FDT_END
        "6100"  # strings: "a\0"
    )


@pytest.mark.parametrize(
    "misuse",
    [
        lambda w: w.property_u32("x", 1),  # outside any node
        lambda w: (w.begin_node(""), w.begin_node("bad name!")),
        lambda w: (w.begin_node(""), w.property_u32("x", 1), w.property_u32("x", 2)),
        lambda w: (w.begin_node(""), w.finish()),
        lambda w: w.end_node(),
    ],
)
def test_misuse_is_an_error(misuse) -> None:
    with pytest.raises(FdtError):
        misuse(FdtWriter())
