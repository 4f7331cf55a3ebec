"""elvisor's loggers: the standard `logging`, imported only when a message is kept.

`logging` (and traceback, string and more behind it) is a noticeable part of the VMM's
start, and a VM that runs well logs nothing: a message below `threshold` costs one
comparison and imports nothing. The first message kept runs the set-up the command line
gave (`set_up`), then goes to `logging.getLogger(name)` as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DEBUG, INFO, WARNING, ERROR, OFF = 10, 20, 30, 40, 51  # logging's levels (OFF: above all)

threshold = WARNING  # messages below it are dropped here
_configure: Callable[[], None] | None = None  # sets up `logging` before the first message


def set_up(level: int, configure: Callable[[], None] | None = None) -> None:
    """Keep messages from `level` up; `configure` (if given) runs before the first of them."""
    global threshold, _configure
    threshold = level
    if configure is not None:
        _configure = configure


class Log:
    """A module's logger (`log = Log(__name__)`), with the calls of a `logging.Logger`."""

    __slots__ = ("_logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: Any = None

    def debug(self, message: str, *args: object) -> None:
        if threshold <= DEBUG:
            self._emit(DEBUG, message, args)

    def info(self, message: str, *args: object) -> None:
        if threshold <= INFO:
            self._emit(INFO, message, args)

    def warning(self, message: str, *args: object) -> None:
        if threshold <= WARNING:
            self._emit(WARNING, message, args)

    def error(self, message: str, *args: object) -> None:
        if threshold <= ERROR:
            self._emit(ERROR, message, args)

    def exception(self, message: str, *args: object) -> None:
        """An error with the exception being handled, and its traceback."""
        if threshold <= ERROR:
            self._emit(ERROR, message, args, exc_info=True)

    def _emit(self, level: int, message: str, args: tuple[object, ...], **extra: Any) -> None:
        if self._logger is None:
            global _configure
            import logging

            if _configure is not None:
                configure, _configure = _configure, None
                configure()
            self._logger = logging.getLogger(self.name)
        # stacklevel: the origin shown (%(pathname)s, %(lineno)d) is the caller's, not ours
        self._logger.log(level, message, *args, stacklevel=3, **extra)
