"""The KVM tests run on an arm64 host with /dev/kvm: inside the lab, or natively.

Where /dev/kvm should be and is not, they fail: they are never skipped.
"""

import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUESTS = ROOT / "build" / "guests"
ELVISOR = [sys.executable, "-m", "elvisor"]
# generous bounds against a hung guest, not timing assertions: the lab is software-emulated
BOOT_TIMEOUT = 300


@pytest.fixture(scope="session", autouse=True)
def _require_kvm() -> None:
    assert platform.machine() in ("aarch64", "arm64"), (
        "tests/kvm run on an arm64 host: use `elvisor lab run -- python3 -m pytest tests/kvm`"
    )
    assert os.path.exists("/dev/kvm"), "/dev/kvm is missing on this arm64 host"


@pytest.fixture(scope="session")
def guest():
    """The path of a test guest built by `make guests` (on the host: the lab has no cross tools)."""

    def path(name: str) -> Path:
        found = GUESTS / name
        assert found.exists(), f"{found} is missing: run `make guests` on the host first"
        return found

    return path


@pytest.fixture(scope="session")
def elvisor_run():
    """`elvisor run ARGS` with `stdin` piped in; the completed process (bytes output)."""

    def run(*args: str, stdin: bytes = b"", timeout: float = BOOT_TIMEOUT):
        return subprocess.run(
            [*ELVISOR, "run", *args], input=stdin, capture_output=True, timeout=timeout, check=False
        )

    return run


@pytest.fixture
def console_session():
    """Start guests driven through their console; they are killed if the test leaves any."""
    sessions: list[Session] = []

    def start(*args: str, ignore_sigint: bool = False, command: str = "run") -> Session:
        sessions.append(Session(*args, ignore_sigint=ignore_sigint, command=command))
        return sessions[-1]

    yield start
    for session in sessions:
        session.close()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Session:
    """A guest driven through its console, as a user at a terminal would (expect-style)."""

    def __init__(self, *args: str, ignore_sigint: bool = False, command: str = "run") -> None:
        self.proc = subprocess.Popen(
            [*ELVISOR, command, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # as a shell starts a background job: SIGINT ignored, which elvisor inherits
            preexec_fn=_ignore_sigint if ignore_sigint else None,
        )
        self.output = b""

    def expect(self, pattern: bytes, timeout: float = BOOT_TIMEOUT) -> re.Match[bytes]:
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := re.search(pattern, self.output):
                return match
            chunk = self.proc.stdout.read(65536)
            if chunk:
                self.output += chunk
            elif self.proc.poll() is not None:
                break
            else:
                time.sleep(0.05)
        raise AssertionError(
            f"{pattern!r} never came; the console said:\n"
            + self.output.decode(errors="replace")[-3000:]
        )

    def drain(self) -> bytes:
        """Everything the console has said so far."""
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        while chunk := self.proc.stdout.read(65536):
            self.output += chunk
        return self.output

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = BOOT_TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
