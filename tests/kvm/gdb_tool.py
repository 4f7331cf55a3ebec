"""Debian's arm64 gdb for the tests of `elvisor run --gdb`, unpacked into the cache (which the
lab sees): `python3 tests/kvm/gdb_tool.py` on the host fetches it (tools/run-tests does, before
the lab runs); `command()` in the lab is the argv that runs it, through the unpacked tree's
own loader and libraries, as benchmarks/vmm.py runs Debian's QEMU."""

from __future__ import annotations

import sys
from pathlib import Path

SUITE = "trixie"


def _root() -> Path:
    from elvisor.cache import cache_dir

    return cache_dir() / "tools" / f"gdb-{SUITE}"


def prepare() -> Path:
    from elvisor.cache import cache_dir, locked
    from elvisor.debian.apt import debian_workspace, extract

    root = _root()
    with locked(cache_dir() / "tools" / ".lock"):
        if not (root / ".complete").exists():
            apt = debian_workspace(cache_dir() / "apt" / SUITE, SUITE)
            packages = apt.resolve(["gdb"])
            for deb in apt.download(packages, cache_dir() / "debs" / SUITE):
                extract(deb, root)
            (root / ".complete").touch()
    return root


def command() -> list[str]:
    """gdb, as the lab runs it; AssertionError when the host did not fetch it."""
    root = _root()
    assert (root / ".complete").exists(), f"gdb is not in {root}: run tests/kvm/gdb_tool.py"
    libs = [root / d for d in ("usr/lib/aarch64-linux-gnu", "lib/aarch64-linux-gnu")]
    return [
        str(root / "usr/lib/ld-linux-aarch64.so.1"),
        "--library-path",
        ":".join(map(str, libs)),
        str(root / "usr/bin/gdb"),
        "--nx",
        "--batch",
        "--data-directory",
        str(root / "usr/share/gdb"),
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    print(prepare())
