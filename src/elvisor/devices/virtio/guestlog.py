"""A device's warnings about what its guest did: the first few, then silence, so that a guest
that keeps doing it cannot fill the host's log."""

from __future__ import annotations

from elvisor.log import Log


class GuestLog:
    def __init__(self, log: Log, name: str, limit: int = 16) -> None:
        self._log = log
        self.name = name  # the device, as the messages name it
        self._left = limit

    def warning(self, what: str) -> None:
        if self._left > 0:
            self._left -= 1
            self._log.warning("%s: %s", self.name, what)
