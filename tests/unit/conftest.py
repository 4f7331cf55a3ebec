import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import settings

from elvisor.cache import cache_dir
from elvisor.debian.apt import debian_workspace, extract
from elvisor.lab.profiles import DEFAULT_SUITE

CROSS = "aarch64-linux-gnu-"

# Property-based tests: a few thousand cases in `make test` ("ci"); `make fuzz` ("fuzz") runs
# over 100 000. No example database (nothing written in the checkout), no deadlines (these
# machines are noisy).
settings.register_profile("ci", max_examples=1000, deadline=None, database=None)
settings.register_profile("fuzz", max_examples=35000, deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def kernel(tmp_path):
    """A minimal arm64 Linux Image: its header, 1 MiB of image size."""
    path = tmp_path / "Image"
    path.write_bytes(struct.pack("<IIQQQQQQII", 0, 0, 0, 1 << 20, 0, 0, 0, 0, 0x644D5241, 0))
    return path


@pytest.fixture
def disk(tmp_path):
    """A raw disk image of 4 KiB."""
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(4096))
    return path


@pytest.fixture(scope="session")
def cross_tool():
    """The aarch64 binutils/gcc from the distribution (installed by `make test`)."""

    def tool(name: str) -> str:
        path = shutil.which(CROSS + name)
        assert path, f"{CROSS}{name} is missing: apt-get install gcc-aarch64-linux-gnu"
        return path

    return tool


@pytest.fixture(scope="session")
def arm64_kernel_headers() -> Path:
    """The arm64 kernel's user-space headers: Debian's linux-libc-dev for arm64."""
    dest = cache_dir() / "headers" / DEFAULT_SUITE
    if not (dest / "usr/include/linux/kvm.h").exists():
        apt = debian_workspace(cache_dir() / "apt" / DEFAULT_SUITE, DEFAULT_SUITE)
        package = apt.candidate("linux-libc-dev")
        (deb,) = apt.download([package], cache_dir() / "debs" / DEFAULT_SUITE)
        shutil.rmtree(dest, ignore_errors=True)
        extract(deb, dest)
    return dest / "usr/include"


@pytest.fixture
def assemble(tmp_path, cross_tool):
    """Assemble AArch64 source text into an ELF object; returns its bytes."""

    def run(source: str) -> bytes:
        src, obj = tmp_path / "x.S", tmp_path / "x.o"
        src.write_text(source)
        subprocess.run([cross_tool("as"), "-o", str(obj), str(src)], check=True)
        return obj.read_bytes()

    return run
