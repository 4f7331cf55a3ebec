"""A full memory barrier callable from Python, for memory shared with a running guest.

arm64 is weakly ordered: a vCPU on another core may see a virtqueue's used index before the
used-ring entry written just before it, unless a barrier (`dmb ish`) sits between the two
stores. Python has no barrier of its own, so `fence()` calls two machine instructions
(the barrier and `ret`) placed in an executable page of our own. On x86_64 (TSO; unit tests
run there) `mfence` plays the same part.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Callable

CODE = {
    "aarch64": bytes.fromhex("bf3b03d5c0035fd6"),  # dmb ish; ret
    "arm64": bytes.fromhex("bf3b03d5c0035fd6"),
    "x86_64": bytes.fromhex("0faef0c3"),  # mfence; ret
}


def _make_fence() -> tuple[Callable[[], None], object]:
    code = CODE.get(os.uname().machine)
    if code is None:
        raise OSError(f"no memory barrier known for {os.uname().machine}")
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(address, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
        raise OSError(ctypes.get_errno(), "mprotect(PROT_EXEC) refused")
    return ctypes.CFUNCTYPE(None)(address), page  # the page lives as long as the function


def _unavailable() -> None:
    raise RuntimeError(f"no memory barrier on this host: {UNAVAILABLE}")


UNAVAILABLE: str | None = None  # why there is no fence here (an executable page refused)
fence: Callable[[], None] = _unavailable
try:
    fence, _page = _make_fence()
except OSError as e:
    UNAVAILABLE = str(e)
