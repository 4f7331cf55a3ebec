"""A full memory barrier callable from Python, for memory shared with a running guest.

arm64 is weakly ordered: a vCPU on another core may see a virtqueue's used index before the
used-ring entry written just before it, unless a barrier (`dmb ish`) sits between the two
stores. Python has no barrier of its own, so `fence()` calls two machine instructions
(the barrier and `ret`) placed in an executable page of our own. On x86_64 (TSO; unit tests
run there) `mfence` plays the same part.

`sync_instructions(address)` does the same for code written into guest memory (a debugger's
breakpoint): the data cache line cleaned to the point of unification and the instruction
cache invalidated for it, so that the guest fetches what was written (a no-op on x86_64).
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Callable

ARM64 = (
    bytes.fromhex("bf3b03d5c0035fd6"),  # dmb ish; ret
    # dc cvau, x0; dsb ish; ic ivau, x0; dsb ish; isb; ret
    bytes.fromhex("207b0bd59f3b03d520750bd59f3b03d5df3f03d5c0035fd6"),
)
CODE = {  # (the fence, the instruction-cache sync of the line at x0 / rdi)
    "aarch64": ARM64,
    "arm64": ARM64,
    "x86_64": (bytes.fromhex("0faef0c3"), bytes.fromhex("c3")),  # mfence; ret / ret
}
SYNC_OFFSET = 64  # where the second routine sits in the page


def _make() -> tuple[Callable[[], None], Callable[[int], None], object]:
    code = CODE.get(os.uname().machine)
    if code is None:
        raise OSError(f"no memory barrier known for {os.uname().machine}")
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    page.write(code[0])
    page.seek(SYNC_OFFSET)
    page.write(code[1])
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(address, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
        raise OSError(ctypes.get_errno(), "mprotect(PROT_EXEC) refused")
    sync = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(address + SYNC_OFFSET)
    return ctypes.CFUNCTYPE(None)(address), sync, page  # the page lives as the functions do


def _unavailable() -> None:
    raise RuntimeError(f"no memory barrier on this host: {UNAVAILABLE}")


def _no_sync(address: int) -> None:
    _unavailable()


UNAVAILABLE: str | None = None  # why there is no fence here (an executable page refused)
fence: Callable[[], None] = _unavailable
sync_instructions: Callable[[int], None] = _no_sync  # after code is written at this address
try:
    fence, sync_instructions, _page = _make()
except OSError as e:
    UNAVAILABLE = str(e)
