"""What a piece of code costs the host, measured: the growth of this process's peak resident
memory (VmHWM, reset through /proc/self/clear_refs) while it runs."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    assert match, f"/proc/self/status has no {field}"
    return int(match.group(1)) << 10


def restart_peak() -> int:
    """Start measuring: the peak restarts from the current RSS, which is returned."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def peak() -> int:
    return _status("VmHWM")


def peak_rss_growth(work: Callable[[], T]) -> tuple[T, int]:
    """(what `work` returned, how far the peak RSS rose above the RSS before it, in bytes)."""
    before = restart_peak()
    result = work()
    return result, peak() - before
