"""A writer (and reader) for the cpio "newc" format, the format of Linux initramfs images.

Written here rather than with cpio(1) so that owners, device nodes and modes are exactly what
the lab needs without root privileges on the building machine.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One archive member. Exactly one of `data`, `source` or `target` gives its content."""

    path: str  # relative, without a leading slash
    mode: int  # including the file type bits (stat.S_IFREG, ...)
    mtime: int = 0
    data: bytes | None = None  # a regular file's content
    source: Path | None = None  # a regular file's content, read from disk
    target: str | None = None  # a symbolic link's target
    rdev: tuple[int, int] = (0, 0)  # a device node's (major, minor)

    def size(self) -> int:
        if self.target is not None:
            return len(self.target.encode())
        if self.data is not None:
            return len(self.data)
        if self.source is not None:
            return self.source.stat().st_size
        return 0


def directory(path: str, mode: int = 0o755, mtime: int = 0) -> Entry:
    return Entry(path, stat.S_IFDIR | mode, mtime)


def file(path: str, data: bytes, mode: int = 0o644, mtime: int = 0) -> Entry:
    return Entry(path, stat.S_IFREG | mode, mtime, data=data)


def symlink(path: str, target: str, mtime: int = 0) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, mtime, target=target)


def char_device(path: str, major: int, minor: int, mode: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | mode, rdev=(major, minor))


def _pad(out: BinaryIO, length: int) -> None:
    out.write(b"\0" * (-length % 4))


def _header(out: BinaryIO, ino: int, entry: Entry, size: int, nlink: int) -> None:
    name = entry.path.encode() + b"\0"
    fields = (ino, entry.mode, 0, 0, nlink, entry.mtime, size, 0, 0, *entry.rdev, len(name), 0)
    out.write(MAGIC + b"".join(b"%08X" % f for f in fields) + name)
    _pad(out, 110 + len(name))


def write(out: BinaryIO, entries: list[Entry]) -> int:
    """Write the entries (parents before children) and the trailer; returns bytes written."""
    start = out.tell()
    for ino, entry in enumerate(entries, start=1):
        size = entry.size()
        _header(out, ino, entry, size, 2 if stat.S_ISDIR(entry.mode) else 1)
        if entry.target is not None:
            out.write(entry.target.encode())
        elif entry.data is not None:
            out.write(entry.data)
        elif entry.source is not None:
            with entry.source.open("rb") as f:
                copied = 0
                while chunk := f.read(_COPY_CHUNK):
                    out.write(chunk)
                    copied += len(chunk)
            if copied != size:
                raise OSError(f"{entry.source} changed size while it was being packed")
        _pad(out, size)
    _header(out, 0, Entry(TRAILER, 0), 0, 1)
    return out.tell() - start


def read(source: BinaryIO) -> Iterator[Entry]:
    """The members of a newc archive (regular files with their data), up to the trailer."""
    while True:
        header = source.read(110)
        if len(header) < 110 or header[:6] != MAGIC:
            raise ValueError("not a newc cpio archive (or a truncated one)")
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, mtime, size, name_size = fields[1], fields[5], fields[6], fields[11]
        name = source.read(name_size)[:-1].decode()
        source.read(-(110 + name_size) % 4)
        content = source.read(size)
        source.read(-size % 4)
        if name == TRAILER:
            return
        if stat.S_ISLNK(mode):
            yield Entry(name, mode, mtime, target=content.decode())
        elif stat.S_ISREG(mode):
            yield Entry(name, mode, mtime, data=content)
        else:
            yield Entry(name, mode, mtime, rdev=(fields[9], fields[10]))
