"""An HTTP/1.1 server on a Unix socket: JSON bodies in and out, one request at a time.

It knows nothing of what the requests mean: each goes to a handler, `(method, path, body) ->
Response`, which the control plane supplies. Connections may be kept open (HTTP/1.1
keep-alive) and several may be open at once, but requests are handled one after another.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import stat
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from elvisor.api.response import Response, fault
from elvisor.errors import UserError
from elvisor.log import Log

log = Log(__name__)

MAX_BODY = 51200  # bytes: a request's body is a small JSON document


Handler = Callable[[str, str, bytes], Response]


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # (keep-alive; every response says its length)
    default_request_version = "HTTP/1.1"  # (a malformed request still gets a status line)
    server: _Server

    def _serve(self) -> None:
        if "Transfer-Encoding" in self.headers:
            self._send(fault(400, "send the body with a Content-Length, not chunked"))
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._send(
                fault(400, f"a request body is 0 to {MAX_BODY} bytes, with its Content-Length")
            )
            self.close_connection = True
            return
        body = self.rfile.read(length)
        with self.server.one_at_a_time:
            try:
                response = self.server.handler(self.command, self.path, body)
            except Exception:
                log.exception("the API failed on %s %s", self.command, self.path)
                response = fault(500, "internal error: see the elvisor log")
        self._send(response)

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def _send(self, response: Response) -> None:
        data = b"" if response.body is None else json.dumps(response.body).encode()
        self.send_response(response.status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The errors the HTTP layer finds itself (a malformed request line, say), as JSON."""
        self.close_connection = True
        self._send(fault(code, message or "bad request"))

    def log_message(self, format: str, *args: object) -> None:
        log.debug("api: " + format, *args)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, path: str, handler: Handler) -> None:
        self.handler = handler
        self.one_at_a_time = threading.Lock()
        super().__init__(path, _RequestHandler)


class ApiServer:
    """Serves `handler` on the Unix socket `path` (from a thread of its own, once started);
    `close()` stops it and removes the socket."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        _clear_stale_socket(path)
        try:
            self._server = _Server(str(path), handler)
        except OSError as e:
            raise UserError(f"cannot listen on {path}: {e.strerror}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="api", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clear_stale_socket(path: Path) -> None:
    """A socket file nobody listens on (left by a process that was killed) is removed; a
    live one, or another kind of file, is the user's to deal with."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise UserError(f"--api-sock {path}: {e.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise UserError(f"--api-sock {path} exists and is not a socket: give another path")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            path.unlink()
            return
        except OSError:
            return
    raise UserError(f"--api-sock {path}: another process is listening there")
