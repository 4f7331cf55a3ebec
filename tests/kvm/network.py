"""Network checks shared by the KVM tests: a TCP server on the lab host, and ping."""

import hashlib
import os
import socket
import threading

PAYLOAD = 1 << 20  # bytes each way


class Server:
    """A TCP server on the lab host: sends `data` to its first client, hashes what the
    second one sends."""

    def __init__(self, address: str) -> None:
        self.data = os.urandom(PAYLOAD)
        self.listener = socket.create_server((address, 0))
        self.port = self.listener.getsockname()[1]
        self.received = hashlib.sha256()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with self.listener:
            client, _ = self.listener.accept()
            with client:
                client.sendall(self.data)
            client, _ = self.listener.accept()
            with client:
                while chunk := client.recv(65536):
                    self.received.update(chunk)

    def check(self, guest, host_address: str) -> None:
        """The guest fetches the data, then sends its own; both hashes must match."""
        guest.send(f"nc {host_address} {self.port} | sha256sum")
        got = guest.expect(rb"([0-9a-f]{64})  -\r?\n").group(1).decode()
        assert got == hashlib.sha256(self.data).hexdigest()
        guest.send(
            f"head -c {PAYLOAD} /dev/urandom > /tmp/up && sha256sum /tmp/up"
            f" && nc {host_address} {self.port} < /tmp/up && echo sent-up"
        )
        sent = guest.expect(rb"([0-9a-f]{64})  /tmp/up\r?\n").group(1).decode()
        guest.expect(rb"sent-up\r?\n")
        self.thread.join(120)
        assert self.received.hexdigest() == sent


def ping(guest, address: str) -> None:
    guest.send(f"ping -c 2 -W 5 {address} >/dev/null && echo ping-ok-$((40+2))")
    guest.expect(rb"ping-ok-42\r?\n")
