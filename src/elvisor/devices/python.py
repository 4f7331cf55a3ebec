"""Your own device, in Python: a class of yours on the guest's MMIO bus.

    class Counter:
        compatible = "acme,counter"  # the device-tree node's compatible string
        size = 0x1000                # its MMIO window (rounded up to 4 KiB)
        registers = Reg              # optional: an IntEnum naming the offsets, for --trace

        def __init__(self, irq, **options):   # irq.set_level(True/False): its interrupt line
            ...
        def mmio_read(self, offset, size) -> int: ...
        def mmio_write(self, offset, size, value) -> None: ...

`elvisor run --device counter.py:Counter,start=5` (or `device = ["counter.py:Counter"]` in a
VM file, or `VmConfig(devices=(DeviceConfig("counter.py:Counter"),))`) places it: a window
from USER_MMIO_BASE, an interrupt (an SPI from USER_SPI_BASE) and a device-tree node
`<node>@<address>` (node: the class's `node`, else its name in lower case). Options are
passed as strings. The class is found as `module:Class` (a module on the Python path) or
`file.py:Class`. The device runs in the vCPU threads: what it does between two accesses is
its own business; an exception it raises ends the VM, its traceback logged.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from elvisor.errors import UserError

DEFAULT_SIZE = 0x1000
PAGE = 0x1000
MAX_SIZE = 0x10_0000  # 1 MiB per device
DEFAULT_COMPATIBLE = "elvisor,python-device"


def load_class(target: str, where: str) -> type:
    """The class `target` ("module:Class" or "file.py:Class") names; UserError otherwise."""
    module_name, colon, class_name = target.rpartition(":")
    if not colon or not module_name or not class_name.isidentifier():
        raise UserError(f"{where}: {target!r} is not module:Class (or file.py:Class)")
    try:
        if module_name.endswith(".py"):
            module = _load_file(Path(module_name), where)
        else:
            module = importlib.import_module(module_name)
    except UserError:
        raise
    except ImportError as e:
        raise UserError(f"{where}: cannot import {module_name}: {e}") from None
    except Exception as e:  # (the user's module failed while it was imported)
        raise UserError(f"{where}: {module_name} failed to import: {e!r}") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise UserError(f"{where}: {module_name} has no class {class_name}")
    for method in ("mmio_read", "mmio_write"):
        if not callable(getattr(cls, method, None)):
            raise UserError(f"{where}: {class_name} has no {method} method")
    size = window(cls)
    if not 0 < size <= MAX_SIZE:
        raise UserError(f"{where}: {class_name}.size is {size:#x}: 1 byte to {MAX_SIZE:#x}")
    return cls


def _load_file(path: Path, where: str) -> Any:
    if not path.is_file():
        raise UserError(f"{where}: {path} does not exist")
    name = f"elvisor_device_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{where}: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (dataclasses and pickling look their module up here)
    spec.loader.exec_module(module)
    return module


def window(cls: type) -> int:
    """The device's MMIO window, in whole 4 KiB pages."""
    size = int(getattr(cls, "size", DEFAULT_SIZE))
    return -(-size // PAGE) * PAGE if size > 0 else size


def node_name(cls: type) -> str:
    return str(getattr(cls, "node", cls.__name__.lower()))


def compatible(cls: type) -> str:
    return str(getattr(cls, "compatible", DEFAULT_COMPATIBLE))
