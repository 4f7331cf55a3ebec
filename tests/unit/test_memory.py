"""Guest memory: every access is checked over its whole span."""

import mmap
from pathlib import Path

import pytest

from elvisor.memory import GuestMemory, GuestMemoryError

BASE = 0x4000_0000
PAGE = mmap.PAGESIZE


@pytest.fixture
def memory():
    m = GuestMemory([(BASE, 4 * PAGE)])
    yield m
    m.close()


def test_read_write_round_trip(memory: GuestMemory) -> None:
    memory.write(BASE + 10, b"hello")
    assert memory.read(BASE + 10, 5) == b"hello"
    memory.write_u64(BASE + 4 * PAGE - 8, 0x1122334455667788)
    assert memory.read_u64(BASE + 4 * PAGE - 8) == 0x1122334455667788
    assert memory.read_u32(BASE + 4 * PAGE - 8) == 0x55667788


def test_view_is_zero_copy(memory: GuestMemory) -> None:
    view = memory.view(BASE + PAGE, 4)
    view[:] = b"abcd"
    assert memory.read(BASE + PAGE, 4) == b"abcd"
    memory.write(BASE + PAGE, b"wxyz")
    assert bytes(view) == b"wxyz"


@pytest.mark.parametrize(
    ("gpa", "length"),
    [
        (BASE - 1, 1),  # just below RAM
        (BASE + 4 * PAGE, 1),  # just past the end
        (BASE + 4 * PAGE - 4, 8),  # starts inside, ends outside
        (BASE, 4 * PAGE + 1),
        (BASE, -1),
        (-8, 16),
        (BASE, 1 << 64),  # absurd length
        ((1 << 64) - 4, 8),  # wrapping address
    ],
)
def test_out_of_bounds_is_refused_and_writes_nothing(memory, gpa: int, length: int) -> None:
    before = memory.read(BASE, 4 * PAGE)
    with pytest.raises(GuestMemoryError):
        memory.check_range(gpa, length)
    with pytest.raises(GuestMemoryError):
        memory.read(gpa, length)
    if 0 <= length < 1 << 20:
        with pytest.raises(GuestMemoryError):
            memory.write(gpa, b"\xff" * length)
    assert memory.read(BASE, 4 * PAGE) == before


def test_empty_access_at_the_end_is_fine(memory: GuestMemory) -> None:
    assert memory.read(BASE + 4 * PAGE, 0) == b""


def test_sizes_round_up_to_the_page() -> None:
    m = GuestMemory([(BASE, PAGE + 1)])
    assert m.size == 2 * PAGE
    m.close()


def test_span_over_two_regions_is_refused() -> None:
    m = GuestMemory([(BASE, PAGE), (BASE + PAGE, PAGE)])
    m.write(BASE + PAGE - 2, b"ab")
    with pytest.raises(GuestMemoryError):
        m.write(BASE + PAGE - 2, b"abcd")
    m.close()


def test_bad_layouts() -> None:
    with pytest.raises(GuestMemoryError, match="not aligned"):
        GuestMemory([(BASE + 1, PAGE)])
    with pytest.raises(GuestMemoryError, match="overlaps"):
        GuestMemory([(BASE, 2 * PAGE), (BASE + PAGE, PAGE)])


def test_memory_is_touched_lazily() -> None:
    """A 1 GiB guest costs only what it touches."""
    m = GuestMemory([(BASE, 1 << 30)])
    m.write(BASE + (512 << 20), b"x")

    def rss_kib() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    assert rss_kib() < 512 * 1024
    m.close()
