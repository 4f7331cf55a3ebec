"""The user's files, read and written with one clear line for what goes wrong: an OSError about
a path the user gave (missing, unreadable, EIO, a directory that does not exist) becomes a
UserError naming the file, never a traceback."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from elvisor.errors import UserError

Read = Callable[[int, int], bytes]  # (offset, size) -> up to size bytes


def _error(verb: str, what: str, path: Path, e: OSError) -> UserError:
    return UserError(f"cannot {verb} {what} {path}: {e.strerror or e}")


@contextmanager
def reader(path: Path, what: str) -> Iterator[Read]:
    """Read parts of `path` (`what` names it in errors) without reading it whole."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise _error("read", what, path, e) from None

    def read(offset: int, size: int) -> bytes:
        try:
            return os.pread(fd, size, offset)
        except OSError as e:
            raise _error("read", what, path, e) from None

    try:
        yield read
    finally:
        os.close(fd)


def read_head(path: Path, what: str, size: int) -> bytes:
    """The first `size` bytes of `path` (fewer if it is shorter)."""
    with reader(path, what) as read:
        return read(0, size)


def size_of(path: Path, what: str) -> int:
    try:
        return path.stat().st_size
    except OSError as e:
        raise _error("read", what, path, e) from None


def read_file(path: Path, what: str, limit: int) -> bytes:
    """All of `path`, if it is at most `limit` bytes (the guest's RAM): a bigger file is
    refused from its size, before it is read (and a file of unknown size, a pipe say, once
    more than `limit` bytes of it came)."""
    too_big = UserError(
        f"{what} {path} is bigger than the guest's {limit >> 20} MiB of RAM: "
        "give the VM more memory (--memory)"
    )
    try:
        with open(path, "rb", buffering=0) as f:
            info = os.fstat(f.fileno())
            if stat.S_ISREG(info.st_mode):
                if info.st_size > limit:
                    raise too_big
                data = f.read()  # (read straight into a bytes object of the file's size)
            else:
                chunks: list[bytes] = []
                size = 0
                while size <= limit and (chunk := f.read(1 << 20)):
                    chunks.append(chunk)
                    size += len(chunk)
                data = b"".join(chunks)
    except OSError as e:
        raise _error("read", what, path, e) from None
    if len(data) > limit:
        raise too_big
    return data


def write_file(path: Path, data: bytes, what: str) -> None:
    try:
        path.write_bytes(data)
    except OSError as e:
        raise _error("write", what, path, e) from None


def open_text(path: Path, what: str) -> TextIO:
    """`path`, opened for writing text (line-buffered), or one line saying why not."""
    try:
        return open(path, "w", buffering=1)
    except OSError as e:
        raise _error("write", what, path, e) from None
