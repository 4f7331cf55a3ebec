"""The control plane: the microVM an API drives, and the requests that drive it.

`Api.handle` turns one HTTP request into calls on the `Resources` (before the start), on the
`Instance` (start, restore, stop) or on its running `Vm` (pause, resume, snapshot), and into a
`Response`; `serve` runs it all.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

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
from elvisor.api.instance import Instance
from elvisor.api.response import Response, fault
from elvisor.api.telemetry import Metrics, set_up_logger
from elvisor.config import vm_from_settings
from elvisor.errors import UserError
from elvisor.exits import RunResult
from elvisor.log import Log
from elvisor.vm import State, VmStateError

log = Log(__name__)

STATES = {
    State.CREATED: "Not started",
    State.RUNNING: "Running",
    State.PAUSED: "Paused",
    State.STOPPED: "Not started",
}


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
        api.close()  # (its last metrics line, from the VM before it goes)
        api.instance.close()
