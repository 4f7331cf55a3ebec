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
        """The guest fetches the data, then sends its own; both hashes must match. (The
        answers name the port: a console holds the answers of earlier checks too.)"""
        guest.send(f"echo from-{self.port}=$(nc {host_address} {self.port} | sha256sum)")
        got = guest.expect(rb"from-%d=([0-9a-f]{64}) +-\r?\n" % self.port).group(1).decode()
        assert got == hashlib.sha256(self.data).hexdigest()
        guest.send(
            f"head -c {PAYLOAD} /dev/urandom > /tmp/up && echo to-{self.port}=$(sha256sum /tmp/up)"
            f" && nc {host_address} {self.port} < /tmp/up && echo sent-{self.port}"
        )
        sent = guest.expect(rb"to-%d=([0-9a-f]{64}) +/tmp/up\r?\n" % self.port).group(1).decode()
        guest.expect(rb"sent-%d\r?\n" % self.port)
        self.thread.join(120)
        assert self.received.hexdigest() == sent


def ping(guest, address: str) -> None:
    guest.send(f"ping -c 2 -W 5 {address} >/dev/null && echo ping-ok-$((40+2))")
    guest.expect(rb"ping-ok-42\r?\n")
