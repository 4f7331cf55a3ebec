"""A Firecracker API client, as a tool that drives Firecracker would have one: written from
Firecracker's API description (swagger and docs/api_requests/), sharing no code with elvisor.

HTTP/1.1 over a Unix socket, one connection per request, JSON bodies; 204 means done, 200
carries a JSON answer, 400 a `{"fault_message": ...}`.
"""

from __future__ import annotations

import json
import os
import socket
import time


class FirecrackerError(Exception):
    def __init__(self, status: int, fault: str) -> None:
        super().__init__(f"{status}: {fault}")
        self.status = status
        self.fault = fault


class Firecracker:
    def __init__(self, sock: str, timeout: float = 300.0) -> None:
        self.sock = sock
        self.timeout = timeout

    def wait_for_socket(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.sock):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.sock} never appeared")
            time.sleep(0.05)

    def call(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(self.sock)
            s.sendall(head.encode() + payload)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                assert chunk, f"the connection closed before the answer to {method} {path}"
                data += chunk
            header, _, rest = data.partition(b"\r\n\r\n")
            lines = header.decode().split("\r\n")
            status = int(lines[0].split()[1])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            while len(rest) < length:
                chunk = s.recv(4096)
                assert chunk, "the connection closed in the middle of the body"
                rest += chunk
        return status, json.loads(rest) if length else None

    def _ok(self, method: str, path: str, body: object = None) -> object:
        status, answer = self.call(method, path, body)
        if status >= 300:
            fault = answer.get("fault_message", "") if isinstance(answer, dict) else ""
            raise FirecrackerError(status, fault)
        return answer

    # --- the requests, as the API description names them --------------------------------

    def describe_instance(self) -> dict:
        return self._ok("GET", "/")  # type: ignore[return-value]

    def put_machine_configuration(self, vcpu_count: int, mem_size_mib: int) -> None:
        self._ok("PUT", "/machine-config", {"vcpu_count": vcpu_count, "mem_size_mib": mem_size_mib})

    def put_guest_boot_source(self, kernel: str, initrd: str | None, boot_args: str) -> None:
        body = {"kernel_image_path": kernel, "boot_args": boot_args}
        if initrd is not None:
            body["initrd_path"] = initrd
        self._ok("PUT", "/boot-source", body)

    def put_guest_drive(self, drive_id: str, path: str, root: bool, read_only: bool) -> None:
        body = {"drive_id": drive_id, "path_on_host": path, "is_root_device": root,
                "is_read_only": read_only}  # fmt: skip
        self._ok("PUT", f"/drives/{drive_id}", body)

    def put_metrics(self, metrics_path: str) -> None:
        self._ok("PUT", "/metrics", {"metrics_path": metrics_path})

    def put_logger(self, log_path: str, level: str) -> None:
        self._ok("PUT", "/logger", {"log_path": log_path, "level": level})

    def create_sync_action(self, action_type: str) -> None:
        self._ok("PUT", "/actions", {"action_type": action_type})

    def patch_vm(self, state: str) -> None:
        self._ok("PATCH", "/vm", {"state": state})
