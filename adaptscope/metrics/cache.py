"""Where adaptscope keeps downloaded weights and cached statistics.

One user-level directory: never site-packages, never a shared temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "ADAPTSCOPE_CACHE"


def cache_dir() -> Path:
    """The adaptscope cache root: `$ADAPTSCOPE_CACHE`, else `$XDG_CACHE_HOME/adaptscope`,
    else `~/.cache/adaptscope`. Not created here."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "adaptscope"
