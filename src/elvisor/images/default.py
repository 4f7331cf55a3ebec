"""The default guest: Debian's arm64 kernel and a busybox initramfs, built on first use.

The initramfs holds busybox (its init runs /etc/rc, then a shell on the console; the VM
powers off when the shell exits) and the kernel's virtio modules, loaded at start-up.
Built from Debian packages through apt, cached under <cache>/guest/<key>/.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from elvisor.cache import cache_dir, current, publish
from elvisor.debian import cpio
from elvisor.debian.apt import debian_workspace, extract
from elvisor.debian.kmod import unpack_kernel
from elvisor.errors import UserError

SUITE = "trixie"
KERNEL = "linux-image-arm64"
USERLAND = ["busybox-static"]
# (ext4 wants crc32c without saying so in its dependencies: a soft dependency)
MODULES = ["virtio_mmio", "virtio_blk", "virtio_net", "virtio_rng",
           "vmw_vsock_virtio_transport", "crc32c_generic", "ext4"]  # fmt: skip
CMDLINE = "console=ttyAMA0 quiet"
# installed in /etc
INIT_FILES = {"rc": 0o755, "inittab": 0o644, "console-shell": 0o755, "udhcpc.script": 0o755}
RECIPE_VERSION = 2


@dataclass(frozen=True)
class GuestImage:
    dir: Path
    kernel_release: str
    cmdline: str = CMDLINE

    @property
    def kernel(self) -> Path:
        return self.dir / "Image"

    @property
    def initrd(self) -> Path:
        return self.dir / "initramfs.cpio"


def _guests_dir() -> Path:
    return cache_dir() / "guest"


def _recipe() -> str:
    files = resources.files("elvisor.images")
    parts = [
        RECIPE_VERSION,
        SUITE,
        KERNEL,
        USERLAND,
        MODULES,
        *(files.joinpath(name).read_text() for name in ["init", *INIT_FILES]),
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def find_default_guest() -> GuestImage | None:
    """The default guest as last built with this recipe, without asking apt anything."""
    directory = current(_guests_dir(), _recipe())
    if directory is None:
        return None
    manifest = json.loads((directory / "manifest.json").read_text())
    return GuestImage(directory, manifest["kernel_release"])


def default_guest() -> GuestImage:
    """The default guest, built first if there is none (and apt is there to build it)."""
    if found := find_default_guest():
        return found
    if not shutil.which("apt-get"):
        raise UserError(
            "the default guest is not built, and this machine has no apt to build it: run "
            "`elvisor run` once where apt is (elvisor lab run builds it for the lab), or give "
            "--kernel and --initrd"
        )
    return build_default_guest()


def build_default_guest(mirror: str | None = None) -> GuestImage:
    apt = debian_workspace(cache_dir() / "apt" / SUITE, SUITE, mirror)
    kernel = apt.kernel(KERNEL)
    userland = apt.resolve(USERLAND)
    key = hashlib.sha256(
        json.dumps([str(kernel), [str(p) for p in userland], _recipe()]).encode()
    ).hexdigest()[:16]

    def build(scratch: Path, out: Path) -> None:
        print("elvisor: building the default guest (once)", file=sys.stderr)
        debs = cache_dir() / "debs" / SUITE
        (kernel_deb,) = apt.download([kernel], debs)
        _assemble(scratch, out, kernel_deb, apt.download(userland, debs))

    publish(_guests_dir(), key, build)
    found = find_default_guest()
    assert found is not None
    return found


def _assemble(tmp: Path, out: Path, kernel_deb: Path, userland_debs: list[Path]) -> None:
    release, modules = unpack_kernel(kernel_deb, tmp, out / "Image", MODULES)

    root = tmp / "root"
    for deb in userland_debs:
        extract(deb, root)
    busybox = next(p for p in (root / "bin/busybox", root / "usr/bin/busybox") if p.exists())
    files = resources.files("elvisor.images")
    entries = [
        *(
            cpio.directory(d)
            for d in (
                "bin",
                "dev",
                "etc",
                "lib",
                "lib/modules",
                "lib/modules/guest",
                "proc",
                "root",
                "run",
                "sbin",
                "sys",
                "tmp",
                "usr",
                "usr/bin",
                "usr/sbin",
            )
        ),
        cpio.Entry("bin/busybox", 0o100755, source=busybox),
        cpio.file("init", files.joinpath("init").read_bytes(), 0o755),
        cpio.symlink("bin/sh", "busybox"),
        cpio.char_device("dev/console", 5, 1),
        *(
            cpio.file(f"etc/{name}", files.joinpath(name).read_bytes(), mode)
            for name, mode in INIT_FILES.items()
        ),
        cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        cpio.file("etc/group", b"root:x:0:\n"),
        cpio.file("etc/profile", b"export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"),
        cpio.file("etc/guest-modules", "".join(f"{n}\n" for n, _ in modules).encode()),
        *(cpio.file(f"lib/modules/guest/{name}.ko", image) for name, image in modules),
    ]
    with (out / "initramfs.cpio").open("wb") as f:
        cpio.write(f, sorted(entries, key=lambda e: e.path))
    manifest = {"kernel_release": release, "recipe": _recipe(), "modules": [n for n, _ in modules]}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
