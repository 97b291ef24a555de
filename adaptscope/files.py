"""Writing and reading files safely: the one atomic writer and the one weights-only loader.

An interrupted write never leaves half a file that a later run would trust (results, checkpoints,
cached statistics, trained networks), and nothing adaptscope reads can execute code while it is
unpickled.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from adaptscope.errors import AdaptscopeError, WeightsError


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(handle)` on a new temporary file beside `path`, sync it, then rename it onto
    `path`.

    The rename is atomic on one filesystem, so readers see the old file or the new one, never a
    mix; it replaces whatever `path` is (a link planted there is replaced, not written through).
    The file gets the permissions of a normal `open()`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)
    return path


# A new file only: O_EXCL fails on any name that exists, a link or a FIFO included, so nothing
# planted at a temporary's name is ever opened.
_NEW_FILE = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def _temporary_tag() -> str:
    return secrets.token_hex(4)


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new file `.NAME.TAG.part` beside `path` (the name `stale_temporaries` finds), created
    with mode 0o666 less the umask, as `open()` would."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{_temporary_tag()}.part")
        try:
            return os.open(tmp, _NEW_FILE, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name beside it", str(path))


def _sync_directory(folder: Path) -> None:
    """Make a rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stale_temporaries(folder: Path, name: str) -> list[Path]:
    """Temporary files a writer of `folder/name` killed mid-write left behind."""
    return list(Path(folder).glob(f".{name}.*.part"))


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` through `atomic_write`.

    Serialised in memory first: torch's zip writer turns a failed write (a full disk) into a
    RuntimeError without the reason, where a plain write raises the OSError with its errno."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))


# How a file written by torch.save starts: a zip archive (since torch 1.6) or, in the legacy
# format, a pickle (protocol 2 or later opens with the PROTO opcode 0x80).
TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def load_weights_only(
    path: str | os.PathLike,
    *,
    what: str = "weights file",
    fix: str = "replace it with the right file",
    error: type[AdaptscopeError] = WeightsError,
    safe_globals: Iterable[Any] = (),
) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; every failure becomes one `error` that
    names the file, what it should be (`what`) and what to do (`fix`). A file that torch.save
    cannot have written (text, an image) is said to be no `what`, before anything unpickles it."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist; {fix}")
    if path.suffix == ".pkl":
        raise error(f"{path} is a pickle, which needs arbitrary code to load; {fix}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror or err}; {fix}") from err
    if head.startswith(b"version https://git-lfs"):
        raise error(f"{path} is not a {what} but a Git LFS pointer to one: fetch the file "
                    "itself (`git lfs pull` in its repository)")
    if not head.startswith(TORCH_MAGIC):
        found = "is empty" if not head else "is neither a zip archive nor a pickle"
        raise error(f"{path} is not a {what}: it {found}, and torch.save writes one of those; "
                    f"{fix}")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise error(f"{path} needs arbitrary unpickling to load ({_without_advice(str(err))}); "
                    f"adaptscope only reads tensors and plain data: {fix}") from err
    except Exception as err:  # torch raises many types for damaged or foreign files
        reason = _without_advice(str(err)) if "weights_only" in str(err) else str(err)
        raise error(f"{path} is not a readable {what} (truncated or damaged?): {reason}; "
                    f"{fix}") from err


# torch's sentences that advise loading with weights_only=False (which would run the file's code)
# or allowlisting what the file refers to: adaptscope wants neither.
_ADVICE = re.compile(r"weights_only|safe_globals|allowlist|trust|file an issue|documentation|"
                     r"still be loaded|Weights only load failed", re.IGNORECASE)


def _without_advice(message: str) -> str:
    """torch's reason for refusing a file (the global it refused), without its advice."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", message).replace("WeightsUnpickler error:", ".\n")
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    kept = [s for s in sentences if s.strip(". ") and not _ADVICE.search(s)]
    return " ".join(kept) or "it holds objects other than tensors and plain data"
