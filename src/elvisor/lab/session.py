"""`elvisor lab run`: boot the lab, run one command in it, stream its output, pass its status.

The checkout is shared into the lab with virtio-9p and mounted at the same path, so the
command sees the same files at the same places. QEMU runs in its own session and dies with
this process (PR_SET_PDEATHSIG); it is killed on every exit path.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import math
import os
import platform
import secrets
import selectors
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import BinaryIO

import elvisor
from elvisor.cache import cache_dir
from elvisor.errors import UserError
from elvisor.lab.console import Exited, MarkerScanner, Output, Started
from elvisor.lab.image import LabImage
from elvisor.lab.profiles import LabMachine
from elvisor.lab.qemu import Share, qemu_argv, qemu_binary
from elvisor.terminal import EscapeDecoder, is_interactive, raw_terminal, terminal_size

TIMEOUT_STATUS = 124
SHUTDOWN_GRACE = 15.0  # seconds for the lab to power off after the command ended
BOOT_LOG_TAIL = 20  # console lines shown when the lab fails


@dataclass(frozen=True)
class LabRequest:
    argv: list[str]
    machine: LabMachine
    timeout: float | None  # seconds, or None for no limit
    verbose: bool = False
    disks: tuple[Path, ...] = ()  # raw images: the lab's /dev/vda, /dev/vdb, ...


class _Interrupted(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def source_dirs() -> tuple[Path, Path]:
    """(the directory shared into the lab, the directory that makes `elvisor` importable)."""
    src = Path(elvisor.__file__).resolve().parent.parent
    checkout = src.parent
    return (checkout if (checkout / "pyproject.toml").exists() else src), src


def native_kvm() -> bool:
    """True on an arm64 host whose /dev/kvm this user can open: no lab is needed there."""
    return platform.machine() in ("aarch64", "arm64") and os.access("/dev/kvm", os.R_OK | os.W_OK)


def guest_script(
    argv: list[str],
    shares: list[Share],
    cwd: Path,
    env: dict[str, str],
    nonce: str,
    tty_size: tuple[int, int] | None,
) -> str:
    """The shell script the lab's init runs: mount the shares, then exec the command.

    It starts with the start marker, so that whatever it prints is the command's output.
    """
    q = shlex.quote
    uptime = "$(cut -d' ' -f1 /proc/uptime)"
    lines = [f"printf '\\036elvisor-lab-start-%s %s\\n' {nonce} \"{uptime}\""]
    for share in shares:
        # cache=loose: the lab's files change only through the lab while it runs, so their
        # metadata and pages are kept (every Python import otherwise costs several round
        # trips to the host; init syncs them before it powers off)
        options = "trans=virtio,version=9p2000.L,msize=512000,cache=loose"
        options += ",ro" if share.readonly else ""
        path = q(str(share.path))
        lines.append(
            f"mkdir -p {path} && mount -t 9p -o {options} {share.tag} {path} || "
            f"{{ echo lab: could not mount {path} >&2; exit 125; }}"
        )
    lines.append("export " + " ".join(f"{k}={q(v)}" for k, v in env.items()))
    lines.append(f"cd {q(str(cwd))}")
    if tty_size:
        lines.append(f"stty rows {tty_size[0]} cols {tty_size[1]}")
    lines.append("exec " + shlex.join(argv))
    return "\n".join(lines) + "\n"


def _die_with_parent() -> None:
    """In QEMU's child process: be killed if elvisor dies, even by SIGKILL."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream:
            stream.close()


@contextmanager
def _signals_raise() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP end the run in order, with status 128+signal. SIGINT's
    handler is installed here too: Python leaves SIGINT ignored when its parent ignored it
    (a shell's background job, `nohup`), and Ctrl-C must still end the lab."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(128 + signum)

    saved = {
        sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def run(request: LabRequest, image: LabImage | None, started: float) -> int:
    """Run the request's command in the lab, or natively when `image` is None."""
    if image is None:
        if request.disks:
            raise UserError("--disk gives the emulated lab a disk: this host needs no lab")
        return _run_native(request)
    share_root, src = source_dirs()
    cwd = Path.cwd()
    if not cwd.is_relative_to(share_root):
        cwd = share_root
    cache = cache_dir()
    return boot(
        image,
        request.machine,
        request.argv,
        # the checkout, and (read-only) the cache with the default guest built on this host
        [Share(share_root, "elvisor-share"), Share(cache, "elvisor-cache", readonly=True)],
        cwd,
        {"PYTHONPATH": str(src), "ELVISOR_CACHE_DIR": str(cache)},
        timeout=request.timeout,
        verbose=request.verbose,
        started=started,
        interactive=is_interactive(),
        disks=request.disks,
    )


def boot(
    image: LabImage,
    machine: LabMachine,
    argv: list[str],
    shares: list[Share],
    cwd: Path,
    env: dict[str, str],
    *,
    timeout: float | None,
    verbose: bool,
    started: float,
    interactive: bool,
    out: BinaryIO | None = None,
    disks: tuple[Path, ...] = (),
) -> int:
    """Boot the lab, run `argv` in it; returns its exit status (124 on timeout)."""
    env = {
        "HOME": "/root",
        "TERM": os.environ.get("TERM", "dumb") if interactive else "dumb",
        "LANG": "C.UTF-8",
        "ELVISOR_LAB": "1",
        "PYTHONUNBUFFERED": "1",  # (output through a pipe still streams)
        **env,
    }
    nonce = secrets.token_hex(8)
    script = guest_script(argv, shares, cwd, env, nonce, terminal_size(1) if interactive else None)
    append = [
        "console=ttyAMA0",
        "quiet",
        "panic=-1",  # with QEMU's -no-reboot: a lab whose kernel fails ends at once
        "oops=panic",
        "hardlockup_panic=1",
        f"elvisor_nonce={nonce}",
        f"elvisor_run={base64.b64encode(script.encode()).decode()}",
    ]
    if interactive:
        append.append("elvisor_interactive=1")
    qemu = qemu_argv(qemu_binary(), machine, image, " ".join(append), shares, disks)
    if verbose:
        print(
            f"lab: {image.suite} kernel {image.kernel_release}, -cpu {machine.cpu}, "
            f"GICv{machine.gic}, {machine.cpus} CPUs, {machine.memory_mib} MiB",
            file=sys.stderr,
        )
    proc = subprocess.Popen(
        qemu,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    console = _Console(
        proc, nonce, timeout, verbose, started, interactive, out or sys.stdout.buffer
    )
    try:
        with _signals_raise(), raw_terminal(0) if interactive else nullcontext():
            return console.pump()
    except KeyboardInterrupt:
        return 130
    except _Interrupted as e:
        return e.status
    finally:
        _stop(proc)


class _Console:
    """Moves bytes between the host terminal and the lab's serial console until the end."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        nonce: str,
        timeout: float | None,
        verbose: bool,
        started: float,
        interactive: bool,
        out: BinaryIO,
    ) -> None:
        self.proc = proc
        self.timeout = timeout
        self.verbose = verbose
        self.started = started
        self.interactive = interactive
        self.scanner = MarkerScanner(nonce)
        self.escape = EscapeDecoder()
        self.boot_log = bytearray()
        self.qemu_errors = bytearray()
        self.command_started = False
        self.status: int | None = None
        self.out = out

    def pump(self) -> int:
        assert self.proc.stdout and self.proc.stderr
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ, self._console)
        sel.register(self.proc.stderr, selectors.EVENT_READ, self._qemu_stderr)
        if self.interactive:
            sel.register(0, selectors.EVENT_READ, self._keyboard)
        deadline = math.inf if self.timeout is None else self.started + self.timeout
        grace_started = False
        while True:
            if self.status is not None and not grace_started:  # the lab is powering off
                deadline = min(deadline, time.monotonic() + SHUTDOWN_GRACE)
                grace_started = True
            wait = deadline - time.monotonic()
            if wait <= 0:
                break
            if not self._transfer(sel, min(wait, 1.0)):
                break
            if self.escape.quit:  # the user's way out, as in QEMU and `elvisor run`: status 0
                self._message("lab: stopped (Ctrl-A x)")
                return 0
        sel.close()
        if self.status is not None:
            return self.status
        if self.proc.poll() is None:  # still running: the deadline passed
            return self._timed_out()
        self._write(self.scanner.flush())
        return self._failed(self.proc.wait())

    def _transfer(self, sel: selectors.BaseSelector, wait: float) -> bool:
        """Move what is ready; False once the lab's console has closed (QEMU ended)."""
        for key, _ in sel.select(wait):
            data = os.read(key.fd, 65536)
            if data:
                key.data(data)
                continue
            sel.unregister(key.fileobj)
            if key.fileobj is self.proc.stdout:
                self.proc.wait()
                return False
        return True

    # --- the streams ----------------------------------------------------------------------

    def _console(self, data: bytes) -> None:
        for event in self.scanner.feed(data):
            if isinstance(event, Output):
                if self.status is not None:
                    continue  # the lab powering off
                if self.command_started:
                    self._write(event.data)
                else:
                    self.boot_log += event.data
                    del self.boot_log[:-65536]
                    if self.verbose:
                        sys.stderr.buffer.write(event.data)
                        sys.stderr.flush()
            elif isinstance(event, Started):
                self.command_started = True
                if self.verbose:
                    elapsed = time.monotonic() - self.started
                    self._message(
                        f"lab: command started {elapsed:.1f} s after `lab run` "
                        f"(lab kernel up {event.uptime:.1f} s)"
                    )
            elif isinstance(event, Exited):
                self.status = event.status

    def _qemu_stderr(self, data: bytes) -> None:
        self.qemu_errors += data
        del self.qemu_errors[:-65536]
        if self.verbose:
            sys.stderr.buffer.write(data)
            sys.stderr.flush()

    def _keyboard(self, data: bytes) -> None:
        assert self.proc.stdin
        data = self.escape.feed(data)
        if data:
            with contextlib.suppress(BrokenPipeError):  # QEMU is gone: the loop ends next
                os.write(self.proc.stdin.fileno(), data)

    def _write(self, data: bytes) -> None:
        if not data:
            return
        try:
            self.out.write(data)
            self.out.flush()
        except BrokenPipeError:
            self.out = open(os.devnull, "wb")  # noqa: SIM115 (reader went away; keep going)

    def _message(self, text: str) -> None:
        if self.interactive:  # the terminal is raw: start on a fresh line, return the carriage
            text = "\r\n" + text.replace("\n", "\r\n") + "\r"
        print(text, file=sys.stderr, flush=True)

    # --- endings ---------------------------------------------------------------------------

    def _tail(self) -> str:
        lines = self.boot_log.decode(errors="replace").replace("\r", "").splitlines()
        errors = self.qemu_errors.decode(errors="replace").splitlines()
        return "\n".join(["  " + line for line in (lines + errors)[-BOOT_LOG_TAIL:]])

    def _timed_out(self) -> int:
        where = "" if self.command_started else " before the command started"
        self._message(f"lab: timed out after {self.timeout:g} s{where}; stopping the lab")
        if not self.command_started and self.boot_log:
            self._message("lab: the last lines of its console:\n" + self._tail())
        return TIMEOUT_STATUS

    def _failed(self, qemu_status: int) -> int:
        what = "stopped before the command ended" if self.command_started else "did not boot"
        raise UserError(
            f"the lab {what} (QEMU exit status {qemu_status}); the last lines of its console:\n"
            + self._tail()
        )


def _run_native(request: LabRequest) -> int:
    """On an arm64 host with a usable /dev/kvm there is nothing to emulate."""
    _, src = source_dirs()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    env["ELVISOR_LAB"] = "native"
    try:
        proc = subprocess.Popen(request.argv, env=env)
    except OSError as e:
        raise UserError(f"cannot run {request.argv[0]}: {e.strerror}") from None
    try:
        with _signals_raise():
            return proc.wait(request.timeout)
    except subprocess.TimeoutExpired:
        print(f"lab: timed out after {request.timeout:g} s", file=sys.stderr)
        return TIMEOUT_STATUS
    except KeyboardInterrupt:
        return 130
    except _Interrupted as e:
        return e.status
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
