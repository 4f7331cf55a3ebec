"""The EL2 hypervisor's device-tree reader (baremetal/core/fdt.c), compiled for this host and
given device trees made with dtc: what it finds, and that it finds the firmware's PSCI only
where there is some (the Raspberry Pi's own firmware has none: CPU 0 only, then)."""

import subprocess
from pathlib import Path

import pytest

BAREMETAL = Path(__file__).resolve().parents[2] / "baremetal"
DRIVER = r"""
#include <stdio.h>
#include "fdt.h"
static unsigned long long blob[1 << 14];
int main(int argc, char **argv)
{
    FILE *f = fopen(argv[1], "rb");
    fread(blob, 1, sizeof blob, f);
    struct fdt_facts facts;
    if (fdt_read(blob, &facts) != 0)
        return puts("unsound"), 0;
    printf("%s|%u|%d|%llx|%llx|%llx\n", facts.model, facts.cpus, facts.psci,
           (unsigned long long)facts.memory_base, (unsigned long long)facts.memory_size,
           (unsigned long long)facts.mpidr[1]);
    return 0;
}
"""


def tree(psci: str) -> str:
    return f"""/dts-v1/;
/ {{
    model = "board"; #address-cells = <2>; #size-cells = <2>;
    memory@40000000 {{ device_type = "memory"; reg = <0 0x40000000 0 0x20000000>; }};
    cpus {{ #address-cells = <1>; #size-cells = <0>;
        cpu@0 {{ reg = <0>; }}; cpu@100 {{ reg = <0x100>; }};
    }};
    {psci}
}};
"""


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fdt")
    (directory / "driver.c").write_text(DRIVER)
    program = directory / "fdt-reader"
    subprocess.run(["gcc", "-O1", "-I", str(BAREMETAL / "include"), "-o", str(program),
                    str(directory / "driver.c"), str(BAREMETAL / "core" / "fdt.c")],
                   check=True)  # fmt: skip
    return program


@pytest.mark.parametrize(
    ("psci", "found"),
    [('psci { compatible = "arm,psci-1.0"; method = "smc"; };', "1"),
     ('psci { method = "hvc"; };', "0"),  # not the hypervisor's to call
     ("", "0")],
)  # fmt: skip
def test_the_reader_finds_memory_cpus_and_psci(reader, tmp_path, psci: str, found: str) -> None:
    source, blob = tmp_path / "t.dts", tmp_path / "t.dtb"
    source.write_text(tree(psci))
    subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-o", str(blob), str(source)], check=True)
    result = subprocess.run([reader, blob], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"board|2|{found}|40000000|20000000|100"


def test_a_damaged_tree_is_refused(reader, tmp_path) -> None:
    blob = tmp_path / "t.dtb"
    source = tmp_path / "t.dts"
    source.write_text(tree(""))
    subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-o", str(blob), str(source)], check=True)
    data = bytearray(blob.read_bytes())
    data[8:12] = (len(data) + 64).to_bytes(4, "big")  # the structure block past the end
    blob.write_bytes(data)
    result = subprocess.run([reader, blob], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "unsound"
