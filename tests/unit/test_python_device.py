"""Devices of the user's, in Python (elvisor.devices.python): found from --device, from a VM
file and from the Python API; refused with one line when they cannot be; placed in the device
tree. The example of docs/ behaves as its page says."""

import dataclasses
from pathlib import Path

import pytest
from test_devicetree import decompile, spec

from elvisor.arch.arm64 import devicetree, layout
from elvisor.config import DeviceConfig, read_toml, vm_from_settings, vm_settings
from elvisor.devices import python
from elvisor.devices.bus import Placement
from elvisor.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
COUNTER = ROOT / "docs" / "examples" / "counter.py"


class Line:
    def __init__(self) -> None:
        self.levels: list[bool] = []

    def set_level(self, level: bool) -> None:
        self.levels.append(level)


class Tiny:
    size = 10  # (a window of whole pages: 4 KiB)

    def __init__(self, irq, **options: str) -> None:
        self.options = options

    def mmio_read(self, offset: int, size: int) -> int:
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        pass


def test_the_example_counter_counts_steps_and_raises_its_line() -> None:
    cls = python.load_class(f"{COUNTER}:Counter", "--device")
    line = Line()
    counter = cls(line, start="100")
    assert counter.mmio_read(0x0, 4) == 0x454C5653
    assert [counter.mmio_read(0x4, 4) for _ in range(2)] == [100, 101]
    counter.mmio_write(0x8, 4, 5)
    assert [counter.mmio_read(0x4, 4) for _ in range(2)] == [102, 107]
    counter.mmio_write(0xC, 4, 1)
    counter.mmio_write(0xC, 4, 0)
    assert line.levels == [True, False]
    assert (python.window(cls), python.node_name(cls), python.compatible(cls)) == (
        0x1000, "counter", "elvisor,example-counter")  # fmt: skip


def test_device_option_parses_options_and_the_python_api_takes_a_class() -> None:
    device = DeviceConfig.parse(f"{COUNTER}:Counter,start=7,name=x=y")
    assert device.options == (("start", "7"), ("name", "x=y"))
    assert device.device_class().__name__ == "Counter"
    assert DeviceConfig(Tiny).device_class() is Tiny
    assert python.window(Tiny) == 0x1000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("counter", "is not module:Class"),
        ("no_such_module_here:Thing", "cannot import no_such_module_here"),
        ("/nonexistent/dev.py:Thing", "/nonexistent/dev.py does not exist"),
        (f"{COUNTER}:Nothing", "has no class Nothing"),
        (f"{COUNTER}:Reg", "Reg has no mmio_read method"),
        (f"{COUNTER}:Counter,start", "options are key=value, not 'start'"),
        ("json:JSONDecoder", "JSONDecoder has no mmio_read method"),
    ],
)
def test_devices_that_cannot_be_are_one_line(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        DeviceConfig.parse(text)


def test_a_module_that_fails_or_a_window_too_big_is_one_line(tmp_path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('nope')\n")
    with pytest.raises(UserError, match=r"broken.py failed to import: RuntimeError\('nope'\)"):
        DeviceConfig.parse(f"{broken}:Thing")
    huge = tmp_path / "huge.py"
    huge.write_text("class Huge:\n    size = 1 << 30\n    def mmio_read(self, o, s): return 0\n"
                    "    def mmio_write(self, o, s, v): pass\n")  # fmt: skip
    with pytest.raises(UserError, match=r"Huge.size is 0x40000000: 1 byte to 0x100000"):
        DeviceConfig.parse(f"{huge}:Huge")


def test_a_vm_file_names_devices_relative_to_itself(tmp_path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "counter.py").write_text(COUNTER.read_text())
    vm_toml = tmp_path / "vm.toml"
    vm_toml.write_text('binary = "/etc/hostname"\ndevice = "dev/counter.py:Counter,start=3"\n')
    settings = vm_settings(read_toml(vm_toml), str(vm_toml), tmp_path, {"binary", "device"})
    config = vm_from_settings(settings)
    (device,) = config.devices
    assert device.target == f"{tmp_path}/dev/counter.py:Counter"
    assert device.options == (("start", "3"),)


def test_the_device_tree_node_has_the_devices_compatible_and_interrupt(tmp_path) -> None:
    placement = Placement("counter", layout.USER_MMIO_BASE, 0x1000, layout.USER_SPI_BASE,
                          "elvisor,example-counter")  # fmt: skip
    tree = spec(3)
    tree = dataclasses.replace(tree, devices=[*tree.devices, placement])
    dts = decompile(devicetree.build(tree), tmp_path)
    node = dts[dts.index("counter@b000000 {") :]
    node = node[: node.index("};")]
    assert 'compatible = "elvisor,example-counter";' in node
    assert "reg = <0x00 0xb000000 0x00 0x1000>;" in node
    assert "interrupts = <0x00 0x30 0x04>;" in node  # SPI 48, level high


def test_at_most_sixteen_devices() -> None:
    from elvisor.config import VmConfig

    with pytest.raises(UserError, match="17 devices \\(--device\\): at most 16"):
        VmConfig(binary=Path("/etc/hostname"), load_addr=0x4008_0000,
                 devices=(DeviceConfig(Tiny),) * 17)  # fmt: skip
