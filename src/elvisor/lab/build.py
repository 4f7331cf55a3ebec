"""The whole lab build: the image (lab/image.py), then compiled Python byte code for it.

Python compiles every module it imports, and nothing it writes into the lab's RAM survives
the next boot: importing pytest alone took 8.5 s instead of 1.7 s. So once per userland
the lab is booted to compile the standard library and pytest; the __pycache__ directories
come back as a cpio archive that is appended to the initramfs (the kernel unpacks
concatenated archives in turn). `unchecked-hash` byte code is never compared with its
source, which never changes inside a built lab.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from elvisor.cache import locked
from elvisor.errors import UserError
from elvisor.lab import session
from elvisor.lab.image import LabImage, build_image, find_image
from elvisor.lab.profiles import LabMachine
from elvisor.lab.qemu import Share

COMPILE = (
    "cd / && python3 -m compileall -q -j0 --invalidation-mode unchecked-hash "
    "-x '/(test|tests|idlelib|tkinter|turtledemo|lib2to3|ensurepip|pydoc_data)/' "
    "/usr/lib/python3.*/ /usr/lib/python3/dist-packages >/dev/null && "
    "find usr -name __pycache__ -o -name '*.pyc' | cpio -o -H newc > \"$OUT/pycache.cpio\""
)
COMPILE_TIMEOUT = 600.0


def ensure_image(
    suite: str,
    flavour: str,
    mirror: str | None = None,
    refresh: bool = False,
    rebuild: bool = False,
) -> LabImage:
    """A ready lab: the cached one, or (if there is none, or `rebuild`) a fresh build."""
    image = None if rebuild or refresh else find_image(suite, flavour)
    image = image or build_image(suite, flavour, mirror, refresh)
    with locked(image.dir / ".pycache.lock"):
        image = LabImage.load(image.dir)
        if not image.pycache:
            _add_pycache(image)
    return LabImage.load(image.dir)


def _add_pycache(image: LabImage) -> None:
    started = time.monotonic()
    print("lab: compiling Python byte code inside the lab (once per build)", file=sys.stderr)
    machine = LabMachine("max", 3, 2, 2048, image.flavour)
    with tempfile.TemporaryDirectory(prefix=".pycache-", dir=image.dir) as tmp:
        out = Path(tmp)
        log = io.BytesIO()
        status = session.boot(
            image,
            machine,
            ["sh", "-c", COMPILE],
            [Share(out, "elvisor-out")],
            out,
            {"OUT": str(out)},
            timeout=COMPILE_TIMEOUT,
            verbose=False,
            started=started,
            interactive=False,
            out=log,
        )
        archive = out / "pycache.cpio"
        if status != 0 or not archive.exists():
            raise UserError(
                f"compiling Python inside the lab failed (status {status}): "
                + log.getvalue().decode(errors="replace").strip()[-500:]
            )
        combined = image.dir / "initramfs.cpio.new"
        with combined.open("wb") as f:
            for part in (image.initrd, archive):
                with part.open("rb") as src:
                    while chunk := src.read(1 << 20):
                        f.write(chunk)
        os.replace(combined, image.initrd)
    manifest_path = image.dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["pycache"] = True
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"lab: byte code compiled in {time.monotonic() - started:.1f} s", file=sys.stderr)
