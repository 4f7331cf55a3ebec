"""`elvisor lab run`: statuses, output, the shared checkout, timeouts, signals, failures."""

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from elvisor.debian import cpio
from elvisor.lab.image import find_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize(
    ("command", "status"),
    [
        ("exit 0", 0),
        ("exit 42", 42),
        ("no-such-command", 127),
    ],
)
def test_exit_status_passes_through(lab_run, command: str, status: int) -> None:
    assert lab_run("--", "sh", "-c", command).returncode == status


@pytest.mark.usefixtures("no_leftovers")
def test_output_cwd_checkout_and_no_temp_files(lab_run) -> None:
    temp_before = set(os.listdir(tempfile.gettempdir()))
    marker = ROOT / "build" / "lab-share-test"
    marker.parent.mkdir(exist_ok=True)
    marker.unlink(missing_ok=True)
    script = (
        'pwd; printf "tab\\there\\n"; echo to-stderr >&2; '
        'python3 -c "import elvisor; print(elvisor.__file__)"; '
        "test -c /dev/kvm && echo kvm; test -t 1 || echo no-terminal; "
        "echo written-in-lab > build/lab-share-test"
    )
    result = lab_run("--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"{ROOT}\ntab\there\nto-stderr\n{ROOT}/src/elvisor/__init__.py\nkvm\nno-terminal\n"
    )
    assert marker.read_text() == "written-in-lab\n"  # the share is live, both ways
    marker.unlink()
    assert set(os.listdir(tempfile.gettempdir())) == temp_before


@pytest.mark.usefixtures("no_leftovers")
def test_timeout_stops_the_lab_with_status_124(lab_run) -> None:
    started = time.monotonic()
    result = lab_run("--timeout", "20", "--", "sleep", "600")
    assert result.returncode == 124
    assert "timed out after 20 s" in result.stderr
    assert time.monotonic() - started < 120  # stopped, not waited out


def _ignore_sigint() -> None:
    """As a shell starts a background job (and as `make test` may be started)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_and_wait_for_command(*cmd: str, ignore_sigint: bool = False) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "elvisor", "lab", "run", "-v", "--", *cmd],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        # as a shell starts a background job (and as `make test` may be started): SIGINT ignored
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        if ignore_sigint
        else None,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "command started" in line:
            return proc
    proc.kill()
    proc.communicate()
    raise AssertionError("the command never started in the lab")


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize(
    ("sig", "ignored", "status"),
    [
        (signal.SIGINT, False, 130),
        (signal.SIGINT, True, 130),  # Ctrl-C ends the lab even if elvisor's parent ignored it
        (signal.SIGTERM, False, 143),
    ],
)
def test_signal_ends_the_run_in_order(sig: signal.Signals, ignored: bool, status: int) -> None:
    proc = start_and_wait_for_command("sleep", "600", ignore_sigint=ignored)
    proc.send_signal(sig)
    try:
        _, stderr = proc.communicate(timeout=60)  # (both pipes drained meanwhile)
    finally:
        if proc.poll() is None:  # never leave it (and its QEMU) running
            proc.kill()
            proc.communicate()
    assert proc.returncode == status, stderr


def test_killed_elvisor_takes_qemu_with_it(lab_qemus) -> None:
    before = lab_qemus()
    proc = start_and_wait_for_command("sleep", "600")
    ours = lab_qemus() - before
    assert len(ours) == 1
    proc.kill()  # SIGKILL: no clean-up code runs in elvisor
    proc.communicate()
    for _ in range(100):
        if not ours & lab_qemus():
            break
        time.sleep(0.1)
    assert not ours & lab_qemus(), "QEMU outlived the elvisor process that started it"


@pytest.mark.usefixtures("no_leftovers")
def test_lab_that_does_not_boot_shows_its_console(lab_run, tmp_path: Path) -> None:
    """A kernel with no init to run panics; the user sees why, and status 2."""
    good = find_image("trixie", "arm64")
    assert good is not None
    broken = tmp_path / "lab" / "trixie-arm64" / "broken"
    broken.mkdir(parents=True)
    (broken / "vmlinuz").symlink_to(good.kernel)
    with (broken / "initramfs.cpio").open("wb") as f:
        cpio.write(f, [cpio.directory("etc")])
    manifest = json.loads((good.dir / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "pycache": True}))
    (broken.parent / "current").write_text("broken")

    result = lab_run("--", "true", env={"ELVISOR_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "elvisor: error: the lab did not boot" in result.stderr
    assert "Kernel panic" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.usefixtures("no_leftovers")
def test_ctrl_a_x_at_a_terminal_leaves_the_lab_with_status_0() -> None:
    """The way out `make demo` shows: the lab stops, and nothing looks like a failure."""
    main, tty = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "elvisor", "lab", "run", "-v", "--", "sleep", "600"],
        stdin=tty,
        stdout=tty,
        stderr=tty,
        cwd=ROOT,
        start_new_session=True,
    )
    os.close(tty)
    seen = b""
    try:
        while b"command started" not in seen:
            ready, _, _ = select.select([main], [], [], 120)
            assert ready, f"the command never started; the terminal showed:\n{seen[-2000:]!r}"
            seen += os.read(main, 4096)
        os.write(main, b"\x01x")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            while os.read(main, 4096):
                pass
        os.close(main)
