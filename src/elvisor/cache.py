"""Where elvisor keeps what it downloads and builds (lab images, default guests)."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """$ELVISOR_CACHE_DIR, else $XDG_CACHE_HOME/elvisor, else ~/.cache/elvisor."""
    if explicit := os.environ.get("ELVISOR_CACHE_DIR"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "elvisor"
