"""`elvisor lab run`: statuses, output, the shared checkout, timeouts, signals, failures."""

import json
import os
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
        "test -c /dev/kvm && echo kvm; echo written-in-lab > build/lab-share-test"
    )
    result = lab_run("--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"{ROOT}\ntab\there\nto-stderr\n{ROOT}/src/elvisor/__init__.py\nkvm\n")
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


def start_and_wait_for_command(*cmd: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "elvisor", "lab", "run", "-v", "--", *cmd],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "command started" in line:
            return proc
    proc.kill()
    raise AssertionError("the command never started in the lab")


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_ends_the_run_in_order(sig: signal.Signals, status: int) -> None:
    proc = start_and_wait_for_command("sleep", "600")
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == status
    proc.communicate()


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
