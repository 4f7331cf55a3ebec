"""Finding the machine's Debian mirror in its apt configuration."""

import os
import subprocess
import sys

import pytest

from elvisor.debian.apt import Package, debian_mirror, system_sources
from elvisor.errors import UserError


def write_etc(tmp_path, files: dict[str, str]):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (etc / name).write_text(text)
    return etc


def test_deb822_sources(tmp_path) -> None:
    etc = write_etc(
        tmp_path,
        {
            "sources.list.d/debian.sources": """\
Types: deb deb-src
# a comment
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""
        },
    )
    sources = system_sources(etc)
    assert [s.uri for s in sources] == [
        "http://mirror.example/debian/",
        "http://mirror.example/debian-security",
    ]
    assert debian_mirror(sources).uri == "http://mirror.example/debian/"


def test_one_line_sources_security_first(tmp_path) -> None:
    etc = write_etc(
        tmp_path,
        {
            "sources.list": """\
deb http://sec.example/debian-security bookworm-security main
# deb http://commented.example/debian bookworm main
deb [arch=amd64 signed-by=/x.gpg] http://mirror.example/debian trixie main non-free
"""
        },
    )
    chosen = debian_mirror(system_sources(etc))
    assert chosen.uri == "http://mirror.example/debian"
    assert chosen.origin == str(etc / "sources.list")


def test_disabled_and_foreign_sources_are_not_debian(tmp_path) -> None:
    etc = write_etc(
        tmp_path,
        {
            "sources.list.d/off.sources": "Types: deb\nURIs: http://off.example/debian\n"
            "Suites: trixie\nComponents: main\nEnabled: no\n",
            "sources.list.d/ubuntu.list": "deb http://archive.example/ubuntu noble main\n",
            "sources.list.d/node.sources": "Types: deb\nURIs: https://node.example/\n"
            "Suites: nodistro\nComponents: main\n",
        },
    )
    with pytest.raises(UserError) as caught:
        debian_mirror(system_sources(etc))
    message = str(caught.value)
    assert "http://archive.example/ubuntu" in message and "--mirror" in message
    assert "off.example" not in message


def test_no_sources_at_all(tmp_path) -> None:
    with pytest.raises(UserError, match="tried: none"):
        debian_mirror(system_sources(tmp_path / "nothing"))


def test_package_filename_quotes_the_epoch() -> None:
    assert Package("zlib1g", "1:1.3.dfsg-1", "arm64").filename == "zlib1g_1%3a1.3.dfsg-1_arm64.deb"


def test_unreachable_mirror_is_one_line_naming_it(tmp_path) -> None:
    """Nothing listens on the discard port of this machine: apt fails, and says where."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "elvisor",
            "lab",
            "build",
            "--suite",
            "bookworm",
            "--mirror",
            "http://127.0.0.1:9/debian",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "ELVISOR_CACHE_DIR": str(tmp_path)},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("elvisor: error: apt-get could not get Debian bookworm")
    assert "http://127.0.0.1:9/debian (given with --mirror)" in lines[-1]
    assert "Traceback" not in result.stderr
