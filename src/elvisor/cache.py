"""Where elvisor keeps what it downloads and builds (lab images, default guests)."""

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    """$ELVISOR_CACHE_DIR, else $XDG_CACHE_HOME/elvisor, else ~/.cache/elvisor."""
    if explicit := os.environ.get("ELVISOR_CACHE_DIR"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "elvisor"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed): one builder at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def current(parent: Path, recipe: str) -> Path | None:
    """The build `parent/current` names, if the recipe that made it is `recipe` (its
    manifest.json says so): a changed recipe means a rebuild."""
    try:
        directory = parent / (parent / "current").read_text().strip()
        if json.loads((directory / "manifest.json").read_text())["recipe"] == recipe:
            return directory
    except (OSError, ValueError, KeyError):
        pass
    return None


def publish(parent: Path, key: str, build: Callable[[Path, Path], None]) -> Path:
    """`parent/key`, made current: built first, unless there, by build(scratch_dir, out_dir)
    (which writes out_dir/manifest.json); older builds are removed. One builder at a time."""
    with locked(parent / ".lock"):
        final = parent / key
        if not (final / "manifest.json").exists():
            with tempfile.TemporaryDirectory(prefix=".build-", dir=parent) as scratch:
                out = Path(scratch) / "out"
                out.mkdir()
                build(Path(scratch), out)
                shutil.rmtree(final, ignore_errors=True)
                out.rename(final)
        (parent / "current").write_text(key)
        for old in parent.iterdir():
            if old.is_dir() and old.name != key and not old.name.startswith(".build-"):
                shutil.rmtree(old, ignore_errors=True)
    return final
