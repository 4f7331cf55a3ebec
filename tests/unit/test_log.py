"""elvisor.log: `logging` stays out of the process until a message is kept."""

import subprocess
import sys

PROGRAM = """
import sys
import elvisor.log as log

calls = []
log.set_up(log.WARNING, lambda: calls.append("configured"))
x = log.Log("elvisor.x")
x.debug("dropped %d", 1)
x.info("dropped %d", 2)
assert "logging" not in sys.modules, "a dropped message imported logging"
assert calls == []

import elvisor.vm, elvisor.builder, elvisor.snapshot, elvisor.api.instance, elvisor.cli
assert "logging" not in sys.modules, "the VMM's modules import logging"

def configure():
    import logging
    calls.append("configured")
    form = "%(levelname)s %(name)s %(lineno)d %(message)s"
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format=form)

log.set_up(log.INFO, configure)
x.info("kept %s", "info")
x.warning("kept %s", "warning")
try:
    1 / 0
except ZeroDivisionError:
    x.exception("failed")
assert calls == ["configured"], calls
"""


def test_logging_is_imported_by_the_first_message_kept_and_set_up_once() -> None:
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "INFO elvisor.x 23 kept info"  # (the caller's line, not the logger's)
    assert lines[1] == "WARNING elvisor.x 24 kept warning"
    assert lines[2] == "ERROR elvisor.x 28 failed"
    assert "ZeroDivisionError" in out.stdout  # the traceback of `exception`
