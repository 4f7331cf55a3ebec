"""A client of the API socket: HTTP/1.1 over a Unix socket, JSON in and out (`elvisor ctl`)."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path

from elvisor.errors import UserError

TIMEOUT = 60.0  # seconds for an answer (a start builds the VM first)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self._path))


def request(
    sock: Path, method: str, path: str, body: object = None, timeout: float = TIMEOUT
) -> tuple[int, object]:
    """One request: (status, the JSON body or None). UserError when nobody answers."""
    connection = _UnixConnection(sock, timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    except (FileNotFoundError, ConnectionRefusedError):
        raise UserError(f"nothing listens on {sock}: is elvisor running with --api-sock?") from None
    except OSError as e:
        raise UserError(f"cannot talk to {sock}: {e.strerror or e}") from None
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        raise UserError(f"{sock} answered {method} {path} with no JSON") from None
