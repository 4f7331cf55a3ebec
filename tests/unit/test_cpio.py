"""The initramfs writer, read back by an independent reader: GNU cpio."""

import io
import shutil
import stat
import subprocess

import pytest

from elvisor.debian import cpio


@pytest.fixture
def gnu_cpio() -> str:
    path = shutil.which("cpio")
    assert path, "cpio is missing: apt-get install cpio"
    return path


def test_archive_lists_and_extracts(tmp_path, gnu_cpio) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(bytes(range(256)) * 1000 + b"tail")
    entries = [
        cpio.directory("etc"),
        cpio.file("etc/hello", b"hello\n", 0o640, mtime=1_700_000_000),
        cpio.Entry("etc/big", stat.S_IFREG | 0o755, source=source),
        cpio.symlink("etc/link", "hello"),
        cpio.char_device("console", 5, 1),
        cpio.file("odd-name-len", b"x"),  # padding of names and data to 4 bytes
    ]
    buf = io.BytesIO()
    written = cpio.write(buf, entries)
    assert written == len(buf.getvalue()) and written % 4 == 0

    listing = subprocess.run(
        [gnu_cpio, "-itv", "--quiet"], input=buf.getvalue(), capture_output=True, check=True
    ).stdout.decode()
    lines = listing.splitlines()
    assert len(lines) == len(entries)
    assert lines[0].startswith("drwxr-xr-x") and lines[0].endswith(" etc")
    assert lines[1].startswith("-rw-r-----") and " root " in lines[1]
    assert lines[3].startswith("lrwxrwxrwx") and lines[3].endswith("etc/link -> hello")
    assert lines[4].startswith("crw-------") and "5,   1" in lines[4]

    out = tmp_path / "out"
    out.mkdir()
    files = [e for e in entries if not stat.S_ISCHR(e.mode)]
    archive = io.BytesIO()
    cpio.write(archive, files)
    subprocess.run([gnu_cpio, "-idm", "--quiet"], input=archive.getvalue(), cwd=out, check=True)
    assert (out / "etc/hello").read_bytes() == b"hello\n"
    assert (out / "etc/hello").stat().st_mtime == 1_700_000_000
    assert (out / "etc/big").read_bytes() == source.read_bytes()
    assert (out / "etc/big").stat().st_mode & 0o777 == 0o755
    assert (out / "etc/link").readlink().name == "hello"
    assert (out / "odd-name-len").read_bytes() == b"x"


def test_golden_bytes() -> None:
    """One file, byte for byte as the newc format (the kernel's initramfs-buffer-format.rst)."""
    buf = io.BytesIO()
    cpio.write(buf, [cpio.file("a", b"hi")])
    header = "070701" + "".join(f"{v:08X}" for v in (1, 0o100644, 0, 0, 1, 0, 2, 0, 0, 0, 0, 2, 0))
    trailer = "070701" + "".join(f"{v:08X}" for v in (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0))
    expected = header.encode() + b"a\0" + b"hi\0\0" + trailer.encode() + b"TRAILER!!!\0" + b"\0\0\0"
    assert buf.getvalue() == expected


def test_reader_reads_what_gnu_cpio_writes(tmp_path, gnu_cpio) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hello").write_bytes(b"hello\n")
    (tree / "etc/link").symlink_to("hello")
    (tree / "odd").write_bytes(b"abc")
    listing = b"etc\netc/hello\netc/link\nodd\n"
    archive = subprocess.run(
        [gnu_cpio, "-o", "-H", "newc", "--quiet"], cwd=tree, input=listing,
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    entries = {e.path: e for e in cpio.read(io.BytesIO(archive))}
    assert set(entries) == {"etc", "etc/hello", "etc/link", "odd"}
    assert stat.S_ISDIR(entries["etc"].mode)
    assert entries["etc/hello"].data == b"hello\n"
    assert entries["etc/link"].target == "hello"
    assert entries["odd"].data == b"abc"


def test_reader_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="not a newc"):
        list(cpio.read(io.BytesIO(b"garbage" * 20)))
