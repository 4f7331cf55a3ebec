"""A VM's life: created -> running <-> paused -> stopped.

`Vm(config)` builds the machine (`elvisor.builder`) and loads what it boots; `start()` runs
one thread per vCPU, each sitting in KVM_RUN (which releases the GIL) and handing its exits
to its `elvisor.exits.exit_handler`, and one I/O thread per virtio device. `pause()` parks the
vCPUs (each after KVM has completed its pending MMIO access, so its state is whole) and the
I/O threads; `resume()` lets them go on; `stop()` ends them. These may be called from any
thread. `run()`, in the main thread, is what `elvisor run` does: start, move console input
to the guest and wait for the end (PSCI SYSTEM_OFF or SYSTEM_RESET, Ctrl-A x, a signal, a
guest failure or `stop()`), then stop.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import threading
import time
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from elvisor import builder
from elvisor.config import VmConfig
from elvisor.console import Console
from elvisor.devices.virtio.worker import Worker
from elvisor.exits import (
    KVM_EXIT_INTR,
    REASONS,
    ExitView,
    Outcome,
    RunResult,
    counted,
    dump_registers,
    exit_handler,
    failure,
)
from elvisor.hypercalls import Hypercall, HypercallHandler, HypercallsUnsupported
from elvisor.kvm import KvmError
from elvisor.log import Log
from elvisor.memory import GuestMemory
from elvisor.terminal import EscapeDecoder, raw_terminal

if TYPE_CHECKING:  # (snapshots are imported when one is taken or restored)
    from elvisor import snapshot as snapshots
    from elvisor.gdb.server import Debugger
    from elvisor.trace import ExitWatch

__all__ = [
    "Hypercall",
    "HypercallHandler",
    "HypercallsUnsupported",
    "Outcome",
    "RunResult",
    "State",
    "Vm",
    "VmStateError",
    "dump_registers",
]

log = Log(__name__)

KICK_SIGNAL = signal.SIGUSR1  # takes a vCPU thread out of KVM_RUN
KICK_INTERVAL = 0.1  # seconds between kicks of a vCPU that has not yet stopped
STOP_ATTEMPTS = 100  # kicks before giving up (10 s)


class State(Enum):
    CREATED = "created"  # built and loaded; no vCPU has run
    RUNNING = "running"
    PAUSED = "paused"  # vCPUs and I/O threads parked; the guest's memory holds still
    STOPPED = "stopped"  # ended: only close() is left


class VmStateError(RuntimeError):
    """A life-cycle call the VM's state does not allow (say, resume() while it runs)."""


class Signalled(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived: the VM ends with `result`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        name = signal.Signals(signum).name
        message = "interrupted" if signum == signal.SIGINT else f"stopped by {name}"
        self.result = RunResult(Outcome.SIGNAL, 128 + signum, message)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise Signalled in the main thread, meanwhile. (SIGINT's
    handler too: Python leaves SIGINT ignored when its parent ignored it.)"""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Signalled(signum)

    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = {sig: signal.signal(sig, handler) for sig in signums}
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def _kick_handler(signum: int, frame: FrameType | None) -> None:
    """SIGUSR1 only interrupts KVM_RUN (EINTR); its default action would end the process."""


class Vm:
    """A VM built from `config`: `start()` or `run()` it, read its memory, `close()` it."""

    def __init__(
        self,
        config: VmConfig,
        console: Console | None = None,
        _snapshot: snapshots.Snapshot | None = None,
    ) -> None:
        if signal.getsignal(KICK_SIGNAL) is not _kick_handler:
            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("create the first Vm in the main thread (it sets a signal)")
            signal.signal(KICK_SIGNAL, _kick_handler)
        self.config = config
        self.console = console or Console.stdio()
        self.on_first_run: Callable[[float], None] | None = None  # gets vCPU 0's first KVM_RUN
        self.watch: ExitWatch | None = None  # --trace exits, --stats: set before the start
        self.debugger: Debugger | None = None  # --gdb: gets the debug exits; before the start
        self._state = State.CREATED
        self._lifecycle = threading.RLock()  # one life-cycle call at a time
        self._gate = threading.Condition()  # where vCPU threads park; guards the fields below
        self._pausing = False
        self._stopping = False
        self._parked = 0
        self._held: set[int] = set()  # vCPUs parked while the others run (a debugger's step)
        self._live = 0  # vCPU threads not yet ended
        self._result: RunResult | None = None
        self._ended = threading.Event()  # a result is set
        self._threads: list[threading.Thread] = []
        self._workers: list[Worker] = []
        self._exits = [[0] * REASONS for _ in range(config.cpus)]  # each vCPU's, by reason
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.machine: builder.Machine | None = None
        try:
            self.machine = builder.build(config, self.console)
            if _snapshot is None:
                builder.boot(self.machine)
            else:
                from elvisor import snapshot as snapshots

                snapshots.restore(self.machine, _snapshot)
                self._state = State.PAUSED  # (with no threads yet: resume() starts them)
        except BaseException:
            self.close()
            raise

    @classmethod
    def restore(cls, files: Path | snapshots.Files, console: Console | None = None) -> Vm:
        """A VM made again from a snapshot (a directory, or its two files), paused:
        `resume()` goes on from where it was. SnapshotError, one line, where the snapshot
        is not whole or this host cannot run it."""
        from elvisor import snapshot as snapshots

        if isinstance(files, Path):
            files = snapshots.Files.in_dir(files)
        snapshot = snapshots.load(files)
        return cls(snapshots.config(snapshot), console, snapshot)

    def snapshot(self, files: Path | snapshots.Files) -> None:
        """Write a snapshot of the paused VM (to a directory, or to its two files)."""
        from elvisor import snapshot as snapshots

        with self._lifecycle:
            if self._state is not State.PAUSED:
                raise VmStateError(f"pause the VM before a snapshot (it is {self._state.value})")
            if isinstance(files, Path):
                files = snapshots.Files.in_dir(files)
            snapshots.save(self._machine, files)

    @property
    def _machine(self) -> builder.Machine:
        if self.machine is None:
            raise VmStateError("the VM is closed")
        return self.machine

    @property
    def memory(self) -> GuestMemory:
        return self._machine.memory

    @property
    def dtb_blob(self) -> bytes:
        """The device tree the guest booted with."""
        return self._machine.dtb_blob

    @property
    def state(self) -> State:
        return self._state

    @property
    def result(self) -> RunResult | None:
        """How the VM ended (the first ending wins), or None while it has not."""
        return self._result

    # --- hypercalls ------------------------------------------------------------------------

    def hypercalls_supported(self) -> bool:
        return self._machine.hypercalls.supported()

    def register_hypercalls(self, base: int, count: int, handler: HypercallHandler) -> None:
        """Forward the SMCCC function IDs [base, base + count) to `handler` (before start()).

        The handler gets a Hypercall and returns the values for x0-x3 (an int is x0; None
        returns NOT_SUPPORTED). Needs the host kernel's SMCCC filter (Linux 6.4 or newer).
        """
        if self._threads:
            raise VmStateError("register hypercalls before the VM starts")
        self._machine.hypercalls.register(base, count, handler)

    # --- the life cycle --------------------------------------------------------------------

    def start(self, paused: bool = False) -> None:
        """Created -> running: the I/O threads, then one thread per vCPU. `paused`: the
        threads park before the guest's first instruction (the VM is then paused)."""
        with self._lifecycle:
            self._expect(State.CREATED, "start")
            if paused:
                with self._gate:
                    self._pausing = True
                for vcpu in self._machine.vcpus:
                    vcpu.set_immediate_exit(True)  # (the first KVM_RUN returns at once)
            self._start_threads()
            self._state = State.RUNNING
            if paused:
                self.pause()

    def _start_threads(self) -> None:
        self._start_workers()
        self._threads = [
            threading.Thread(target=self._vcpu_thread, args=(i,), name=f"vcpu{i}", daemon=True)
            for i in range(len(self._machine.vcpus))
        ]
        self._live = len(self._threads)
        for thread in self._threads:
            thread.start()

    def pause(self) -> None:
        """Running -> paused: every vCPU out of the guest and parked, then the I/O threads
        stopped. Returns when all are."""
        with self._lifecycle:
            self._expect(State.RUNNING, "pause")
            with self._gate:
                self._pausing = True
            if not self._kick_until(lambda: self._parked == self._live):
                with self._gate:  # (let the parked ones go again: the VM runs on)
                    self._pausing = False
                    self._gate.notify_all()
                raise VmStateError("the vCPUs did not stop within 10 s: the VM runs on")
            self._stop_workers()
            self._state = State.PAUSED

    def resume(self, only: int | None = None) -> None:
        """Paused -> running (a VM restored from a snapshot starts here). `only`: that vCPU
        runs, the others stay parked (a debugger stepping one vCPU)."""
        with self._lifecycle:
            self._expect(State.PAUSED, "resume")
            if not self._threads:
                self._start_threads()
                self._state = State.RUNNING
                return
            self._start_workers()
            with self._gate:
                self._held = set() if only is None else set(range(len(self._threads))) - {only}
                self._pausing = False
                self._gate.notify_all()
            self._state = State.RUNNING

    def stop(self) -> None:
        """Any state -> stopped: the vCPU and I/O threads ended. The VM's result is the
        first ending it had, or STOPPED if it had none. Stopping twice does nothing."""
        with self._lifecycle:
            if self._state is State.STOPPED:
                return
            self._finish(RunResult(Outcome.STOPPED, 0, "stopped"))
            with self._gate:
                self._stopping = True
                self._gate.notify_all()
            if not self._kick_until(lambda: self._live == 0):
                log.error("vCPU threads did not stop")
            self._stop_workers()
            self._state = State.STOPPED

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """Wait until the VM ends (its result), or `timeout` seconds (None)."""
        self._ended.wait(timeout)
        return self._result

    def _expect(self, state: State, what: str) -> None:
        if self._state is not state:
            raise VmStateError(f"cannot {what} a VM that is {self._state.value}")
        if self._result is not None and state is not State.CREATED:
            raise VmStateError(f"cannot {what} a VM that has ended ({self._result.message})")

    def _kick_until(self, done: Callable[[], bool]) -> bool:
        """Kick the vCPUs out of KVM_RUN until `done()` (checked under the gate)."""
        for _ in range(STOP_ATTEMPTS):
            with self._gate:
                if done():
                    return True
                vcpus = self._machine.vcpus
                for thread, vcpu in zip(self._threads, vcpus, strict=True):
                    if thread.is_alive():
                        vcpu.set_immediate_exit(True)  # (and at once if about to enter it)
                        with contextlib.suppress(ProcessLookupError):
                            if thread.ident is not None:
                                signal.pthread_kill(thread.ident, KICK_SIGNAL)
                self._gate.wait(KICK_INTERVAL)
        with self._gate:
            return done()

    def _start_workers(self) -> None:
        self._workers = [Worker(v.transport, v.resample_fd) for v in self._machine.virtio]
        for worker in self._workers:
            worker.start()

    def _stop_workers(self) -> None:
        for worker in self._workers:
            worker.stop()
        self._workers = []

    def _finish(self, result: RunResult) -> None:
        """The first ending wins; whoever waits for the end is woken."""
        with self._gate:
            if self._result is None:
                self._result = result
        self._ended.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")

    # --- the vCPU threads ------------------------------------------------------------------

    def _vcpu_thread(self, index: int) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        try:
            self._vcpu_loop(index)
        except Exception:
            log.exception("vCPU %d failed", index)
            self._finish(RunResult(Outcome.FAILED, 1, f"internal error in vCPU {index}"))
        finally:
            with self._gate:
                self._live -= 1
                self._gate.notify_all()

    def _vcpu_loop(self, index: int) -> None:
        machine = self._machine
        vcpu = machine.vcpus[index]
        assert vcpu.kvm_run is not None
        view = ExitView(vcpu.kvm_run, index, vcpu, self._exits[index])
        run, handle = vcpu.run, exit_handler(view, machine.bus, machine.hypercalls)
        if self.watch is not None and self.watch.on:
            handle = self.watch.wrap(handle, view, machine.bus)
        if self.debugger is not None:
            view.on_debug = self._debug_exit
        if index == 0 and self.on_first_run:
            self.on_first_run(time.monotonic())
        try:
            while True:
                try:
                    ending = handle(run())
                except KvmError as e:
                    if e.errno not in (errno.EINTR, errno.EAGAIN):
                        self._finish(failure(view, f"KVM_RUN failed: {os.strerror(e.errno or 0)}"))
                        return
                    ending = handle(KVM_EXIT_INTR)  # (counted as one)
                    if not self._park(index):
                        return
                if ending is not None:
                    self._finish(ending)
                    return
        finally:
            view.release()

    def _park(self, index: int) -> bool:
        """After a kick: wait here while the VM is paused (or this vCPU is held); False
        when the VM stops."""
        with self._gate:
            if (self._pausing or index in self._held) and not self._stopping:
                self._parked += 1
                self._gate.notify_all()
                while (self._pausing or index in self._held) and not self._stopping:
                    self._gate.wait()
                self._parked -= 1
            if self._stopping:
                return False
            self._machine.vcpus[index].set_immediate_exit(False)
        return True

    def _debug_exit(self, view: ExitView) -> None:
        """In a vCPU thread: a breakpoint, step or watchpoint. The vCPU parks at once (its
        next KVM_RUN returns without entering the guest) and the debugger is told; it
        pauses the whole VM (all-stop) from its own thread."""
        with self._gate:
            self._pausing = True
        self._machine.vcpus[view.index].set_immediate_exit(True)
        debug = view.run.exit.debug
        assert self.debugger is not None
        self.debugger.debug_exit(view.index, int(debug.hsr), int(debug.far))

    # --- what it has done ------------------------------------------------------------------

    def metrics(self) -> dict[str, object]:
        """Counters since the VM was built: each vCPU's exits by reason and its CPU time (in
        the guest and in the VMM), each device's MMIO reads and writes, each virtio queue's
        chains and the bytes written into them."""
        machine = self._machine
        vcpus = []
        for index, thread in enumerate(self._threads):
            times = _thread_times(thread.native_id)
            vcpus.append({"exits": counted(self._exits[index]), **times})
        mmio = {name: {"reads": r, "writes": w} for name, (r, w) in machine.bus.counts().items()}
        virtio = {
            slot.placement.name: {
                "device": slot.transport.device.device_id.name.lower(),
                "queues": [
                    {"chains": q.served, "bytes_to_guest": q.bytes_used}
                    for q in slot.transport.queues
                ],
            }
            for slot in machine.virtio
        }
        return {"state": self._state.value, "vcpus": vcpus, "mmio": mmio, "virtio": virtio}

    # --- run(): the VM as a command --------------------------------------------------------

    def run(self) -> RunResult:
        """Start the VM (if not yet) and run it until it ends; then stop it. Main thread.
        (A VM restored paused stays so until someone calls resume().)"""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("Vm.run() runs in the main thread (it handles signals)")
        input_fd = self.console.input_fd
        with (
            signals_raise(),
            raw_terminal(input_fd) if input_fd is not None else contextlib.nullcontext(),
        ):
            try:
                if self._state is State.CREATED:
                    self.start()
                self._supervise(input_fd)
            except Signalled as s:
                self._finish(s.result)
            finally:
                self.stop()
        assert self._result is not None
        return self._result

    def _supervise(self, input_fd: int | None) -> None:
        """Move console input to the guest (while it has room) until the VM ends."""
        escape = EscapeDecoder()
        console_input = self._machine.console_input
        with selectors.PollSelector() as sel:  # poll, unlike epoll, takes files and /dev/null
            sel.register(self._wake_r, selectors.EVENT_READ)
            while self._result is None:
                throttled = input_fd is not None and not console_input.backlog_drained.is_set()
                watched = input_fd is not None and input_fd in sel.get_map()
                if input_fd is not None and not throttled and not watched:
                    sel.register(input_fd, selectors.EVENT_READ)
                elif input_fd is not None and throttled and watched:
                    sel.unregister(input_fd)
                for key, _ in sel.select(0.05 if throttled else None):
                    if key.fd == self._wake_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 64)
                        continue
                    data = os.read(key.fd, 4096)
                    if not data:  # end of input: the guest runs on without it
                        sel.unregister(key.fd)
                        input_fd = None
                        continue
                    data = escape.feed(data)
                    if data:
                        console_input.receive(data)
                    if escape.quit:
                        self._finish(RunResult(Outcome.QUIT, 0, "stopped (Ctrl-A x)"))

    # --- the end ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the VM if it runs, and release everything it holds."""
        if self.machine is not None:
            if self._threads:
                self.stop()
            self.machine.close()
            self.machine = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> Vm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _thread_times(tid: int | None) -> dict[str, float]:
    """A thread's CPU time in seconds (proc(5): utime, stime; guest_time is part of utime)."""
    try:
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rpartition(")")[2].split()
    except OSError:  # (the thread has ended)
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, guest = int(fields[11]), int(fields[12]), int(fields[40])
    return {"guest_s": guest / tick, "vmm_s": (utime - guest + stime) / tick}
