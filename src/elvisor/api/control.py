"""The control plane: the microVM an API drives, and the requests that drive it.

`Instance` owns the VM. The main thread runs it (`Instance.run()`: a VM's signals and console
are the main thread's); the API thread asks for it to start, pause, resume or stop, and waits
for the answer. `Api.handle` turns one HTTP request into calls on the `Resources` (before the
start) or on the running `Vm`, and into a `Response`.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from elvisor import __version__
from elvisor import snapshot as snapshots
from elvisor.api.firecracker import (
    MEMORY_BACKEND,
    NOT_AFTER_START,
    NOT_BEFORE_START,
    PARTIAL_DRIVE,
    PARTIAL_NETWORK_INTERFACE,
    SNAPSHOT_CREATE,
    SNAPSHOT_LOAD,
    UNSUPPORTED,
    BadRequest,
    Resources,
    checked,
)
from elvisor.api.response import Response, fault
from elvisor.config import VmConfig, vm_from_settings
from elvisor.console import Console
from elvisor.errors import UserError
from elvisor.exits import Outcome, RunResult
from elvisor.vm import State, Vm, VmStateError

log = logging.getLogger(__name__)

METRICS_PERIOD = 60.0  # seconds between metrics lines, as Firecracker's
STATES = {
    State.CREATED: "Not started",
    State.RUNNING: "Running",
    State.PAUSED: "Paused",
    State.STOPPED: "Not started",
}
LOG_LEVELS = {
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
    "off": logging.CRITICAL + 1,
}


@dataclass
class _Request:
    """Work for the main thread, and its answer."""

    action: Callable[[], None]
    done: threading.Event
    error: BaseException | None = None


class _Signalled(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Instance:
    """A microVM driven by a control plane: not started, then running (until it ends)."""

    def __init__(self, instance_id: str = "anonymous-instance", console: Console | None = None):
        self.id = instance_id
        self.console = console
        self.config: VmConfig | None = None
        self.vm: Vm | None = None
        self.started_at: float | None = None  # time.monotonic() of the start
        self.on_first_run: Callable[[float], None] | None = None
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
        self.vm.on_first_run = self.on_first_run
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
        self.vm.on_first_run = self.on_first_run
        self.vm.start()
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
            self.vm.close()
            self.vm = None
            self._start(self.config)

    def _wait_for_start(self) -> RunResult | None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            raise _Signalled(signum)

        saved = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
        saved[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        self._accepting = True
        request = None
        try:
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
        except KeyboardInterrupt:
            return RunResult(Outcome.SIGNAL, 130, "interrupted")
        except _Signalled as s:
            name = signal.Signals(s.signum).name
            return RunResult(Outcome.SIGNAL, 128 + s.signum, f"stopped by {name}")
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
            for sig, handler in saved.items():
                signal.signal(sig, handler)
        return None

    def close(self) -> None:
        if self.vm is not None:
            self.vm.close()


class Metrics:
    """JSON lines of the VM's counters, to a file or a named pipe: on FlushMetrics, and every
    METRICS_PERIOD seconds while the VM runs."""

    def __init__(self, path: Path, instance: Instance) -> None:
        try:
            # (a named pipe nobody reads yet is ENXIO here, at once, not a hang)
            self._fd = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o644
            )
        except OSError as e:
            raise BadRequest(f"metrics: cannot open {path}: {e.strerror}") from None
        self._instance = instance
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._periodic, name="metrics", daemon=True)
        self._thread.start()

    def flush(self) -> None:
        vm = self._instance.vm
        line = {"utc_timestamp_ms": int(time.time() * 1000), **(vm.metrics() if vm else {})}
        data = (json.dumps(line) + "\n").encode()
        with self._lock:
            try:
                os.write(self._fd, data)
            except OSError as e:  # (a full pipe, or one whose reader went: the line is lost)
                log.warning("metrics: a line was lost: %s", e.strerror)

    def _periodic(self) -> None:
        while not self._stop.wait(METRICS_PERIOD):
            if self._instance.state in (State.RUNNING, State.PAUSED):
                self.flush()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            os.close(self._fd)


def set_up_logger(
    path: str | None, level: str = "Info", show_level: bool = False, show_origin: bool = False
) -> None:
    """Where elvisor's log goes and from which level (PUT /logger, --log-path, --level)."""
    logger = logging.getLogger("elvisor")
    logger.setLevel(LOG_LEVELS[level.lower()])
    if path is None:
        return
    try:
        handler = logging.FileHandler(path)
    except OSError as e:
        raise BadRequest(f"logger: cannot open {path}: {e.strerror}") from None
    form = "%(asctime)s [" + (f"{'%(levelname)s:' if show_level else ''}") + "%(threadName)s"
    form += (":%(pathname)s:%(lineno)d" if show_origin else "") + "] %(message)s"
    handler.setFormatter(logging.Formatter(form))
    logger.addHandler(handler)
    logger.propagate = False  # (the log goes there, not to stderr too)


class Api:
    """Firecracker's API over an `Instance`: `handle(method, path, body) -> Response`."""

    def __init__(self, instance: Instance, resources: Resources | None = None) -> None:
        self.instance = instance
        self.resources = resources or Resources()
        self.metrics: Metrics | None = None

    def handle(self, method: str, path: str, raw: bytes) -> Response:
        path = path.split("?", 1)[0].rstrip("/") or "/"
        try:
            body = json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError) as e:
            return fault(400, f"the body is not valid JSON: {e}")
        try:
            return self._route(method, path, body)
        except (BadRequest, UserError, VmStateError) as e:
            return fault(400, str(e))

    def _route(self, method: str, path: str, body: object) -> Response:
        r = self.resources
        started = self.instance.vm is not None
        collection, _, item = path[1:].partition("/")
        pre_boot: dict[tuple[str, str], Callable[[], None]] = {
            ("PUT", "boot-source"): lambda: r.put_boot_source(body),
            ("PUT", "machine-config"): lambda: r.put_machine_config(body),
            ("PATCH", "machine-config"): lambda: r.put_machine_config(body, partial=True),
            ("PUT", "drives"): lambda: r.put_drive(item, body),
            ("PUT", "network-interfaces"): lambda: r.put_network_interface(item, body),
            ("PUT", "vsock"): lambda: r.put_vsock(body),
            ("PUT", "entropy"): lambda: r.put_entropy(body),
            ("PUT", "logger"): lambda: self.put_logger(body),
            ("PUT", "metrics"): lambda: self.put_metrics(body),
        }
        with_item = collection in ("drives", "network-interfaces")
        if (method, collection) in pre_boot and bool(item) == with_item:
            if started:
                raise BadRequest(NOT_AFTER_START)
            pre_boot[method, collection]()
            return Response(204)
        if method == "GET" and path == "/":
            return Response(200, self._describe())
        if method == "GET" and path == "/version":
            return Response(200, {"firecracker_version": __version__})
        if method == "GET" and path == "/machine-config":
            return Response(200, r.machine_config)
        if method == "GET" and path == "/vm/config":
            return Response(200, r.vm_config())
        if method == "PUT" and path == "/actions":
            return self._action(body)
        if method == "PATCH" and path == "/vm":
            return self._patch_vm(body)
        if method == "PUT" and path == "/snapshot/create":
            return self._snapshot_create(body)
        if method == "PUT" and path == "/snapshot/load":
            return self._snapshot_load(body)
        if method == "PATCH" and with_item and item:
            return self._patch_device(collection, item, body)
        for prefix, what in UNSUPPORTED.items():
            if path == prefix or path.startswith(prefix + "/"):
                raise BadRequest(f"elvisor has no {what} ({method} {path})")
        raise BadRequest(f"invalid request method and/or path: {method} {path}")

    def _describe(self) -> dict[str, object]:
        return {
            "id": self.instance.id,
            "state": STATES[self.instance.state],
            "vmm_version": __version__,
            "app_name": "elvisor",
        }

    def _action(self, body: object) -> Response:
        if not isinstance(body, dict) or set(body) != {"action_type"}:
            raise BadRequest('actions: the body is {"action_type": ...}')
        action = body["action_type"]
        if action == "InstanceStart":
            if self.instance.vm is not None:
                raise BadRequest("the microVM is already started")
            config = vm_from_settings(self.resources.settings())
            self.instance.start(config)
        elif action == "FlushMetrics":
            if self.metrics is None:
                raise BadRequest("metrics are not set up: PUT /metrics first")
            self.metrics.flush()
        elif action == "InstanceStop":  # (elvisor's own: Firecracker has none on arm64)
            threading.Thread(target=self.instance.stop, name="stop", daemon=True).start()
        elif action == "SendCtrlAltDel":
            raise BadRequest(
                "SendCtrlAltDel is for x86 guests (an i8042 keyboard); arm64 "
                "guests have none: power off from the guest, or InstanceStop"
            )
        else:
            raise BadRequest(
                f"unknown action_type {action!r}: InstanceStart, FlushMetrics, InstanceStop"
            )
        return Response(204)

    def _patch_vm(self, body: object) -> Response:
        if not isinstance(body, dict) or set(body) != {"state"}:
            raise BadRequest('vm: the body is {"state": "Paused"} or {"state": "Resumed"}')
        vm = self.instance.vm
        if vm is None:
            raise BadRequest(NOT_BEFORE_START)
        wanted = body["state"]
        if wanted == "Paused":
            if vm.state is not State.PAUSED:
                vm.pause()
        elif wanted == "Resumed":
            if vm.state is not State.RUNNING:
                vm.resume()
        else:
            raise BadRequest(f"vm: state is Paused or Resumed, not {wanted!r}")
        return Response(204)

    def _snapshot_create(self, body: object) -> Response:
        params = checked(body, "snapshot/create", SNAPSHOT_CREATE)
        if params.get("snapshot_type", "Full") != "Full":
            raise BadRequest("snapshot/create: elvisor takes Full snapshots only")
        vm = self.instance.vm
        if vm is None:
            raise BadRequest(NOT_BEFORE_START)
        vm.snapshot(snapshots.Files(Path(params["snapshot_path"]), Path(params["mem_file_path"])))
        return Response(204)

    def _snapshot_load(self, body: object) -> Response:
        params = checked(body, "snapshot/load", SNAPSHOT_LOAD)
        if self.instance.vm is not None or self.resources.configured():
            raise BadRequest("snapshot/load: only on a fresh process, before anything but the "
                             "logger and the metrics is configured")  # fmt: skip
        backend = params.get("mem_backend")
        if ("mem_file_path" in params) == (backend is not None):
            raise BadRequest("snapshot/load: give mem_file_path or mem_backend (one of them)")
        if backend is not None:
            backend = checked(backend, "snapshot/load mem_backend", MEMORY_BACKEND)
            if backend["backend_type"] != "File":
                raise BadRequest("snapshot/load: elvisor loads memory from a File backend only")
        memory = params["mem_file_path"] if backend is None else backend["backend_path"]
        files = snapshots.Files(Path(params["snapshot_path"]), Path(memory))
        self.instance.restore(files, bool(params.get("resume_vm", False)))
        self.resources = (
            Resources.of(self.instance.vm.config) if self.instance.vm else self.resources
        )
        return Response(204)

    def _patch_device(self, collection: str, item: str, body: object) -> Response:
        """PATCH of a drive or network interface, after the start: what Firecracker changes
        there (rate limiters, a drive's file) elvisor cannot, and says so."""
        if self.instance.vm is None:
            raise BadRequest("PATCH of drives and network interfaces is for a started microVM")
        if collection == "drives":
            drive = checked(body, f"drive {item}", PARTIAL_DRIVE)
            if "path_on_host" in drive:
                raise BadRequest("elvisor cannot give a running microVM's drive another file")
            known = self.resources.drives
        else:
            checked(body, f"network interface {item}", PARTIAL_NETWORK_INTERFACE)
            known = self.resources.network_interfaces
        if item not in known:
            raise BadRequest(f"there is no {collection[:-1].replace('-', ' ')} {item}")
        return Response(204)

    def load(self, document: object) -> None:
        """Firecracker's configuration file: the resources, the logger and the metrics."""
        self.resources.load(document)
        self._apply_logger()
        self._apply_metrics()

    def put_logger(self, body: object) -> None:
        self.resources.put_logger(body)
        self._apply_logger()

    def put_metrics(self, body: object) -> None:
        self.resources.put_metrics(body)
        self._apply_metrics()

    def _apply_logger(self) -> None:
        if (logger := self.resources.logger) is not None:
            set_up_logger(
                logger.get("log_path"),
                logger.get("level", "Info"),
                logger.get("show_level", False),
                logger.get("show_log_origin", False),
            )

    def _apply_metrics(self) -> None:
        if self.resources.metrics is not None and self.metrics is None:
            self.metrics = Metrics(Path(self.resources.metrics["metrics_path"]), self.instance)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.flush()  # (the last counters, as the VM ends)
            self.metrics.close()


def serve(
    api: Api, sock: Path | None, start: Callable[[Instance], None] | None = None
) -> RunResult:
    """Serve `api` on the socket `sock` (None: no API) and run its instance until the VM
    ends: started by `start` at once, or by the API. Everything is released after."""
    server = None
    try:
        if sock is not None:
            from elvisor.api.server import ApiServer

            server = ApiServer(sock, api.handle)
            server.start()
        if start is not None:
            start(api.instance)
        return api.instance.run()
    finally:
        if server is not None:
            server.close()
        api.close()
        api.instance.close()
