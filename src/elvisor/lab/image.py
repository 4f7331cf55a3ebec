"""Building the lab: a Debian arm64 kernel and an initramfs with busybox, Python and pytest.

Everything comes from Debian's arm64 packages through apt. A built lab is cached under
<cache>/lab/<suite>-<flavour>/<key>/, where the key hashes the suite, the exact package
versions and the packing recipe: a second build with nothing new in Debian is instant.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from elvisor.cache import cache_dir, current, publish
from elvisor.debian import cpio
from elvisor.debian.apt import Package, debian_workspace, extract
from elvisor.debian.kmod import unpack_kernel
from elvisor.errors import UserError
from elvisor.lab.profiles import DEFAULT_SUITE, SUITES

FLAVOURS = ("arm64", "arm64-16k")

USERLAND = [
    "busybox-static", "python3", "python3-pytest", "device-tree-compiler",
    "e2fsprogs",  # mke2fs and debugfs: root filesystems for guests, and checking them
    "passt",  # user-mode networking for guests
]  # fmt: skip
# virtio-pci (built into trixie's kernel) and 9p for the shared checkout; virtio-blk for the
# lab's disks (lab run --disk); tun, vhost-net and vhost-vsock for the VMM's network and vsock
# devices; dummy for the lab's own network port
MODULES = [
    "virtio_pci", "9pnet_virtio", "9p", "virtio_blk", "tun", "vhost_net", "vhost_vsock", "dummy",
]  # fmt: skip
# left out of the initramfs: documentation and data nobody reads in the lab
SKIPPED = (
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/locale/",
    "usr/share/lintian/",
    "usr/share/bug/",
    "usr/share/bash-completion/",
    "usr/lib/aarch64-linux-gnu/gconv/",
)
RECIPE_VERSION = 1  # bump when the packing changes, so cached labs are rebuilt

ELVISOR_WRAPPER = b'#!/bin/sh\nexec python3 -m elvisor "$@"\n'
PASSWD = b"root:x:0:0:root:/root:/bin/sh\n"
GROUP = b"root:x:0:\nkvm:x:36:root\n"


@dataclass(frozen=True)
class LabImage:
    """A built lab: its kernel and initramfs, and what they were made of."""

    dir: Path
    suite: str
    flavour: str
    kernel_release: str
    python: str
    pycache: bool = False  # compiled byte code appended (lab/build.py)

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initramfs.cpio"

    @classmethod
    def load(cls, directory: Path) -> LabImage:
        manifest = json.loads((directory / "manifest.json").read_text())
        return cls(
            directory,
            manifest["suite"],
            manifest["flavour"],
            manifest["kernel_release"],
            manifest["python"],
            manifest.get("pycache", False),
        )


def kernel_metapackage(flavour: str) -> str:
    return f"linux-image-{flavour}"


def _labs_dir(suite: str, flavour: str) -> Path:
    return cache_dir() / "lab" / f"{suite}-{flavour}"


def find_image(suite: str, flavour: str) -> LabImage | None:
    """The most recently built lab of this suite and flavour, if this recipe built it."""
    directory = current(_labs_dir(suite, flavour), _recipe_hash())
    return LabImage.load(directory) if directory else None


def _recipe_hash() -> str:
    init = resources.files("elvisor.lab").joinpath("init.sh").read_bytes()
    recipe = [RECIPE_VERSION, USERLAND, MODULES, SKIPPED, init.decode()]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()


def build_image(
    suite: str = DEFAULT_SUITE,
    flavour: str = "arm64",
    mirror: str | None = None,
    refresh: bool = False,
) -> LabImage:
    """Build (or find in the cache) the lab of this suite and kernel flavour."""
    if suite not in SUITES:
        raise UserError(f"unknown lab suite {suite!r}: choose one of {', '.join(SUITES)}")
    started = time.monotonic()
    apt = debian_workspace(cache_dir() / "apt" / suite, suite, mirror)
    if refresh:
        apt.update(force=True)
    kernel = apt.kernel(kernel_metapackage(flavour))
    userland = apt.resolve(USERLAND)
    key_source = json.dumps(
        [suite, flavour, str(kernel), [str(p) for p in userland], _recipe_hash()]
    )
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]

    def build(scratch: Path, out: Path) -> None:
        debs = cache_dir() / "debs" / suite
        (kernel_deb,) = apt.download([kernel], debs)
        _assemble(scratch, out, suite, flavour, kernel_deb, apt.download(userland, debs), userland)

    labs = _labs_dir(suite, flavour)
    image = LabImage.load(publish(labs, key, build))
    size = image.initrd.stat().st_size / 2**20
    print(
        f"lab: {suite} {flavour} ready (kernel {image.kernel_release}, Python {image.python}, "
        f"initramfs {size:.1f} MiB) in {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    return image


def _assemble(
    tmp: Path,
    out: Path,
    suite: str,
    flavour: str,
    kernel_deb: Path,
    userland_debs: list[Path],
    userland: list[Package],
) -> None:
    print(f"lab: unpacking {len(userland_debs) + 1} packages", file=sys.stderr)
    release, modules = unpack_kernel(kernel_deb, tmp, out / "vmlinuz", MODULES)

    root = tmp / "root"
    for deb in userland_debs:
        extract(deb, root)
    python = next(
        p.version.split("-")[0].rsplit(".", 1)[0] for p in userland if p.name == "python3"
    )

    entries = _userland_entries(root)
    extra = [
        cpio.file("init", resources.files("elvisor.lab").joinpath("init.sh").read_bytes(), 0o755),
        cpio.file("usr/bin/elvisor", ELVISOR_WRAPPER, 0o755),
        cpio.file("etc/passwd", PASSWD),
        cpio.file("etc/group", GROUP),
        cpio.file("etc/elvisor-lab/modules", "".join(f"{n}\n" for n, _ in modules).encode()),
        cpio.char_device("dev/console", 5, 1),
        *(cpio.file(f"usr/lib/modules/lab/{name}.ko", image) for name, image in modules),
        *(cpio.symlink(top, f"usr/{top}") for top in ("bin", "sbin", "lib")),
    ]
    for entry in extra:
        entries[entry.path] = entry
    for directory in ("proc", "sys", "dev", "tmp", "run", "root", "mnt", "etc", "usr/local/bin"):
        entries.setdefault(directory, cpio.directory(directory))
    ordered = _with_parents(entries)

    print(f"lab: packing the initramfs ({len(ordered)} files)", file=sys.stderr)
    with (out / "initramfs.cpio").open("wb") as f:
        cpio.write(f, ordered)
    manifest = {
        "suite": suite,
        "flavour": flavour,
        "kernel_release": release,
        "python": python,
        "packages": [str(p) for p in userland],
        "modules": [name for name, _ in modules],
        "recipe": _recipe_hash(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _merged_usr(path: str) -> str:
    """Debian before trixie ships files in /bin, /sbin and /lib: the lab keeps them in /usr."""
    top, _, rest = path.partition("/")
    if top in ("bin", "sbin", "lib", "lib64"):
        return f"usr/{top}/{rest}" if rest else f"usr/{top}"
    return path


def _userland_entries(root: Path) -> dict[str, cpio.Entry]:
    entries: dict[str, cpio.Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames) + sorted(filenames):
            full = Path(dirpath) / name
            rel = _merged_usr(full.relative_to(root).as_posix())
            if rel in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64") and full.is_symlink():
                continue
            if any((rel + "/").startswith(skip) for skip in SKIPPED):
                continue
            st = full.lstat()
            mtime = int(st.st_mtime)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = cpio.symlink(rel, os.readlink(full), mtime)
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = cpio.directory(rel, stat.S_IMODE(st.st_mode), mtime)
            elif stat.S_ISREG(st.st_mode):
                entries[rel] = cpio.Entry(rel, st.st_mode, mtime, source=full)
    return entries


def _with_parents(entries: dict[str, cpio.Entry]) -> list[cpio.Entry]:
    for path in list(entries):
        parent = os.path.dirname(path)
        while parent and parent not in entries:
            entries[parent] = cpio.directory(parent)
            parent = os.path.dirname(parent)
    return [entries[p] for p in sorted(entries)]
