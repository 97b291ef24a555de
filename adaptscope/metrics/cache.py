"""Where adaptscope keeps downloaded weights and cached statistics, and how it writes there.

One user-level directory (never site-packages, never a shared temporary folder), and writes that
are atomic, so an interrupted run never leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
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


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file next to `path`, then rename it onto `path`.

    The rename is atomic on one filesystem, so readers see either the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
