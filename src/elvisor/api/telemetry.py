"""What the control plane reports: the VM's counters as JSON lines (metrics), and where
elvisor's log goes (the logger), as Firecracker's API sets them up.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from elvisor import log as elvisor_log
from elvisor.api.firecracker import BadRequest
from elvisor.api.instance import Instance
from elvisor.log import DEBUG, ERROR, INFO, OFF, WARNING, Log
from elvisor.vm import State

log = Log(__name__)

METRICS_PERIOD = 60.0  # seconds between metrics lines, as Firecracker's
LOG_LEVELS = {"error": ERROR, "warning": WARNING, "info": INFO, "debug": DEBUG, "trace": DEBUG,
              "off": OFF}  # fmt: skip


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
            if self._fd < 0:
                return
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
        self._thread.join()
        with self._lock:
            os.close(self._fd)
            self._fd = -1


def set_up_logger(
    path: str | None, level: str = "Info", show_level: bool = False, show_origin: bool = False
) -> None:
    """Where elvisor's log goes and from which level (PUT /logger, --log-path, --level)."""
    import logging

    logger = logging.getLogger("elvisor")
    logger.setLevel(LOG_LEVELS[level.lower()])
    elvisor_log.set_up(LOG_LEVELS[level.lower()])
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
