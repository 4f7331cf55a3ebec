"""The microVM a control plane drives: built and run by the main thread (a VM's signals and
console are the main thread's), started, restored or stopped on request from another.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from elvisor.config import VmConfig
from elvisor.console import Console
from elvisor.exits import Outcome, RunResult
from elvisor.log import Log
from elvisor.vm import Signalled, State, Vm, VmStateError, signals_raise

if TYPE_CHECKING:
    from elvisor import snapshot as snapshots
    from elvisor.gdb.server import Debugger
    from elvisor.trace import ExitWatch

log = Log(__name__)


@dataclass
class _Request:
    """Work for the main thread, and its answer."""

    action: Callable[[], None]
    done: threading.Event
    error: BaseException | None = None


class Instance:
    """A microVM driven by a control plane: not started, then running (until it ends)."""

    def __init__(self, instance_id: str = "anonymous-instance", console: Console | None = None):
        self.id = instance_id
        self.console = console
        self.config: VmConfig | None = None
        self.vm: Vm | None = None
        self.started_at: float | None = None  # time.monotonic() of the start
        self.on_first_run: Callable[[float], None] | None = None
        self.watch: ExitWatch | None = None  # --trace exits, --stats
        self.gdb: tuple[tuple[str, int], bool] | None = None  # --gdb (address), --gdb-wait
        self.debugger: Debugger | None = None
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._accepting = False  # the main thread takes requests (it waits for the start)
        self._accepting_lock = threading.Lock()
        self._stopped = threading.Event()

    @property
    def state(self) -> State:
        return self.vm.state if self.vm is not None else State.CREATED

    def start(self, config: VmConfig) -> None:
        """Build the VM and start it; returns once it runs. UserError if it cannot be built."""
        self._on_main_thread(lambda: self._start(config))

    def restore(self, files: snapshots.Files, resume: bool) -> None:
        """Make the VM again from a snapshot; running if `resume`, else paused."""
        self._on_main_thread(lambda: self._restore(files, resume))

    def _restore(self, files: snapshots.Files, resume: bool) -> None:
        if self.vm is not None:
            raise VmStateError("the microVM is already started")
        self.started_at = time.monotonic()
        self.vm = Vm.restore(files, self.console)
        self.config = self.vm.config
        self.vm.on_first_run, self.vm.watch = self.on_first_run, self.watch
        if resume:
            self.vm.resume()
        log.info("microVM restored from %s", files.state)

    def stop(self) -> None:
        """End the VM, or the wait for one: `run()` returns."""
        self._stopped.set()
        if self.vm is not None:
            self.vm.stop()

    def _start(self, config: VmConfig) -> None:
        if self.vm is not None:
            raise VmStateError("the microVM is already started")
        self.started_at = time.monotonic()
        self.config = config
        self.vm = Vm(config, self.console)
        self.vm.on_first_run, self.vm.watch = self.on_first_run, self.watch
        wait = False
        if self.gdb is not None:
            from elvisor.gdb.server import Debugger

            address, wait = self.gdb
            self.debugger = Debugger(self.vm, address)
            where = f"{address[0]}:{self.debugger.port}"
            print(f"elvisor: gdb: target remote {where}" + (" (the guest waits for it)" if wait
                  else ""), file=sys.stderr, flush=True)  # fmt: skip
        self.vm.start(paused=wait)
        if self.debugger is not None:
            self.debugger.start()
        log.info("microVM started: %d vCPUs, %d MiB", config.cpus, config.memory >> 20)

    def _on_main_thread(self, action: Callable[[], None]) -> None:
        """Do `action` on the main thread (which waits for it in `run()` until the VM is
        started) and pass on its exception."""
        if threading.current_thread() is threading.main_thread():
            action()
            return
        request = _Request(action, threading.Event())
        with self._accepting_lock:
            if not self._accepting:
                raise VmStateError("the microVM is already started (or ending)")
            self._requests.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error

    def run(self) -> RunResult:
        """Main thread: wait for the start (doing what the API asks of this thread), then run
        the VM until it ends; a guest reset reboots it where its config says so."""
        result = self._wait_for_start()
        if result is not None:
            return result
        while True:
            assert self.vm is not None and self.config is not None
            result = self.vm.run()
            if self._stopped.is_set() or result.outcome is not Outcome.RESET:
                return result
            if not self.config.reboot:
                return result
            self.close()
            self.vm = None
            self._start(self.config)

    def _wait_for_start(self) -> RunResult | None:
        self._accepting = True
        request = None
        try:
            with signals_raise():
                while self.vm is None:
                    if self._stopped.is_set():
                        return RunResult(Outcome.STOPPED, 0, "stopped before it started")
                    try:
                        request = self._requests.get(timeout=0.2)
                    except queue.Empty:
                        continue
                    try:
                        request.action()
                    except Exception as e:
                        request.error = e
                    request.done.set()
                    request = None
        except Signalled as s:
            return s.result
        finally:
            with self._accepting_lock:
                self._accepting = False
            pending = [request] if request is not None else []
            while not self._requests.empty():
                pending.append(self._requests.get_nowait())
            for left in pending:  # (whoever asked is told, not left waiting)
                if not left.done.is_set():
                    left.error = left.error or VmStateError("the microVM is ending")
                    left.done.set()
        return None

    def close(self) -> None:
        if self.debugger is not None:
            self.debugger.close()
            self.debugger = None
        if self.vm is not None:
            self.vm.close()


def run_instance(instance: Instance, start: Callable[[Instance], None] | None) -> RunResult:
    """Start `instance` with `start` (None: something else will) and run it until the VM
    ends; release it after."""
    try:
        if start is not None:
            start(instance)
        return instance.run()
    finally:
        instance.close()
