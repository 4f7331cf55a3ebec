"""An ext4 root filesystem for the default guest, made with `mke2fs -d` from the same busybox
tree its initramfs holds: `elvisor run --disk rootfs.ext4 --cmdline root=/dev/vda` boots
from it (the initramfs's /init mounts it and switches to it)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from elvisor.debian import cpio
from elvisor.errors import UserError
from elvisor.images.default import GuestImage

MIN_SIZE = 16 << 20
LABEL = "elvisor-root"


def unpack(archive: Path, root: Path) -> None:
    """Unpack an initramfs into `root`: directories, files and links (device nodes are left
    out: they need privileges here, and the guest's devtmpfs makes them)."""
    with archive.open("rb") as f:
        for entry in cpio.read(f):
            path = root / entry.path
            if stat.S_ISDIR(entry.mode):
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(stat.S_IMODE(entry.mode))
            elif entry.target is not None:
                path.symlink_to(entry.target)
            elif entry.data is not None:
                path.write_bytes(entry.data)
                path.chmod(stat.S_IMODE(entry.mode))


def build_rootfs(guest: GuestImage, out: Path, size: int) -> None:
    mke2fs = shutil.which("mke2fs") or shutil.which("mke2fs", path="/sbin:/usr/sbin")
    if mke2fs is None:
        raise UserError("mke2fs is missing: install e2fsprogs (apt-get install e2fsprogs)")
    if size < MIN_SIZE:
        raise UserError(f"a root filesystem needs at least {MIN_SIZE >> 20}M")
    if out.exists():
        raise UserError(f"{out} exists: remove it first, or choose another name")
    with tempfile.TemporaryDirectory(prefix="elvisor-rootfs-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        unpack(guest.initrd, root)
        (root / "newroot").mkdir(exist_ok=True)
        done = subprocess.run(
            [mke2fs, "-q", "-t", "ext4", "-L", LABEL, "-E", "root_owner=0:0", "-d", str(root),
             str(out), f"{size >> 10}k"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        out.unlink(missing_ok=True)
        raise UserError(f"mke2fs failed: {done.stderr.strip().splitlines()[-1:]}")
    os.chmod(out, 0o644)
