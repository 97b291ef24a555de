"""The run folder's one owner: every name inside `runs/<run_id>/` and what each file means.

    config.toml          the resolved RunSpec (written once; a different one is refused)
    trajectory.parquet   one row per evaluated iteration (written only by the store)
    trajectory.parquet.prev  the table before the last append (to recover a damaged table)
    samples/iter_XXXXXX.png|npy   the fixed-latent sample grid of each evaluation
    shots.png, shots.npy the few-shot training images
    checkpoints/latest.pt everything needed to resume bit-for-bit
    DONE                 written when the schedule (or the tracked checkpoints) are finished
    FAILED               the error that stopped the run's last attempt (removed when it starts
                         again)
    job.json             the cluster job that runs it (written by the submitting host)
    log_to.json          where `adaptscope run --log-to` exports its rows as they are recorded
                         (tensorboard, wandb; read again by `--resume`)
    .lock                held (flock) by the one process writing the folder: its PID and host

Every file but the trajectory (which the store writes) goes through `files.atomic_write`, so a
kill leaves the previous version or the new one, never half a file.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptscope.config import dumps_toml, read_toml
from adaptscope.errors import RunDirectoryError
from adaptscope.files import atomic_write
from adaptscope.spec import RunSpec, spec_from_dict

try:
    import fcntl
except ImportError:  # Windows has no flock: folders are then not locked (one writer is on you)
    fcntl = None  # type: ignore[assignment]

CONFIG_FILE = "config.toml"
TRAJECTORY_FILE = "trajectory.parquet"
SAMPLES_DIR = "samples"
SHOTS_NPY = "shots.npy"
SHOTS_PNG = "shots.png"
CHECKPOINT_FILE = "checkpoints/latest.pt"
DONE_FILE = "DONE"
FAILED_FILE = "FAILED"
JOB_FILE = "job.json"
LOG_TO_FILE = "log_to.json"
LOCK_FILE = ".lock"

_ABSENT = object()


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; an empty table adds no key."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _show(value: Any) -> str:
    return "<absent>" if value is _ABSENT else repr(value)


def config_differences(stored: Mapping[str, Any], requested: Mapping[str, Any],
                       labels: tuple[str, str] = ("stored", "requested")) -> list[str]:
    """Each setting that differs between two nested configs, by dotted key in key order, as
    `schedule.iterations: 1000 (stored) vs 500 (requested)` (`labels` name the two sides); a
    key that one side lacks shows `<absent>` there. Empty when they hold the same settings."""
    old, new = _flatten(stored), _flatten(requested)
    lines = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if a is _ABSENT or b is _ABSENT or a != b:
            lines.append(f"{key}: {_show(a)} ({labels[0]}) vs {_show(b)} ({labels[1]})")
    return lines


def describe_differences(differences: list[str], limit: int = 5) -> str:
    """The first `limit` differences joined on one line, then how many more there are."""
    text = "; ".join(differences[:limit])
    if len(differences) > limit:
        text += f"; and {len(differences) - limit} more"
    return text


def sample_file(iteration: int, suffix: str) -> str:
    """Relative path of the sample grid saved at `iteration` (`suffix` is 'png' or 'npy')."""
    return f"{SAMPLES_DIR}/iter_{iteration:06d}.{suffix}"


@dataclass(frozen=True)
class RunDir:
    """Paths and markers of one run folder."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def trajectory(self) -> Path:
        return self.path / TRAJECTORY_FILE

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def shots_npy(self) -> Path:
        return self.path / SHOTS_NPY

    @property
    def shots_png(self) -> Path:
        return self.path / SHOTS_PNG

    def sample(self, iteration: int, suffix: str) -> Path:
        return self.path / sample_file(iteration, suffix)

    def is_started(self) -> bool:
        return self.config.exists()

    def is_done(self) -> bool:
        return (self.path / DONE_FILE).exists()

    def mark_done(self, note: str) -> None:
        text = (note.rstrip("\n") + "\n").encode("utf-8")
        atomic_write(self.path / DONE_FILE, lambda handle: handle.write(text))

    @property
    def failed_file(self) -> Path:
        return self.path / FAILED_FILE

    @property
    def job_file(self) -> Path:
        return self.path / JOB_FILE

    def failure(self) -> str | None:
        """The error that stopped the last attempt, or None."""
        try:
            return self.failed_file.read_text(encoding="utf-8").strip()
        except OSError:
            return None

    def mark_failed(self, error: str) -> None:
        text = (error.rstrip("\n") + "\n").encode("utf-8")
        atomic_write(self.failed_file, lambda handle: handle.write(text))

    def clear_failed(self) -> None:
        self.failed_file.unlink(missing_ok=True)

    @property
    def log_to_file(self) -> Path:
        return self.path / LOG_TO_FILE

    def read_log_to(self) -> list[str]:
        """The exports `adaptscope run --log-to` chose for this run (empty when none)."""
        path = self.log_to_file
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as err:
            raise RunDirectoryError(f"{path} is not the export choice adaptscope writes ({err}); "
                                    "delete it (the run then exports nothing)") from err
        chosen = data.get("log_to") if isinstance(data, dict) else None
        if not (isinstance(chosen, list) and all(isinstance(c, str) for c in chosen)):
            raise RunDirectoryError(f"{path} holds no list of exports under 'log_to'; delete it "
                                    "(the run then exports nothing)")
        return chosen

    def write_log_to(self, backends: list[str]) -> None:
        """Record the run's exports; none removes the record (a run exports nothing)."""
        if not backends:
            self.log_to_file.unlink(missing_ok=True)
            return
        text = (json.dumps({"log_to": list(backends)}) + "\n").encode("utf-8")
        atomic_write(self.log_to_file, lambda handle: handle.write(text))

    def read_spec(self) -> RunSpec:
        return spec_from_dict(read_toml(self.config))

    def differences(self, spec: RunSpec) -> list[str]:
        """The settings in which `spec` differs from the run stored here (see
        `config_differences`); empty when they are the same or nothing is stored yet."""
        if not self.config.exists():
            return []
        return config_differences(self.read_spec().to_dict(), spec.to_dict())

    def write_spec(self, spec: RunSpec) -> None:
        """Record the resolved config; refuse a folder that holds a run with another config."""
        data = spec.to_dict()
        if self.config.exists():
            differences = self.differences(spec)
            if differences:
                raise RunDirectoryError(
                    f"{self.path} already holds a run with a different config "
                    f"({describe_differences(differences)}); use another --out directory or "
                    "delete it")
            return
        text = dumps_toml(data).encode("utf-8")
        atomic_write(self.config, lambda handle: handle.write(text))

    @contextmanager
    def lock(self) -> Iterator[RunDir]:
        """Hold the folder's exclusive lock while writing it (creating the folder first).

        A second process is refused with the holder's PID and host. The lock is an `flock` on
        `.lock`: the OS drops it when the holder exits or is killed, so a lock file left
        behind never blocks a later run or `--resume`. Run ids are predictable, so a `.lock`
        that is not a plain file of its own (a link, a FIFO) is refused, never written through.
        Temporaries that a writer killed mid-write left behind are removed once it is held.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # no flock on this platform (Windows): unlocked, as before
            yield self
            return
        fd = self._open_lock(os.O_RDWR | os.O_CREAT)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._busy(_read_holder(fd)) from None
            self._remove_stale_temporaries()
            os.ftruncate(fd, 0)  # a plain file with no other name (checked), held by us
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            try:
                yield self
            finally:
                os.ftruncate(fd, 0)  # still held: nobody reads a stale holder afterwards
        finally:
            os.close(fd)  # releases the lock

    def _open_lock(self, flags: int) -> int:
        """Open `.lock` without following a link or waiting on a FIFO; refuse anything but a
        plain file with no other name. Looked at before it is opened (a FIFO or a device is
        never opened) and checked again on the open file (it may be replaced in between)."""
        problem = _not_a_lock(self.lock_file)
        if problem is None:
            flags |= os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            try:
                fd = os.open(self.lock_file, flags, 0o666)
            except OSError as err:  # a link (O_NOFOLLOW), a folder, a FIFO put there meanwhile
                problem = _not_a_lock(self.lock_file)
                if problem is None:
                    raise
                raise self._bad_lock(problem) from err
            problem = _not_a_lock(os.fstat(fd))
            if problem is None:
                return fd
            os.close(fd)
        raise self._bad_lock(problem)

    def _bad_lock(self, problem: str) -> RunDirectoryError:
        return RunDirectoryError(f"{self.lock_file} is {problem}, not the lock file adaptscope "
                                 "writes; delete it and run again")

    def _remove_stale_temporaries(self) -> None:
        """Remove what atomic writes killed midway left (a checkpoint's can be large). Only the
        lock's holder writes these, except `job.json`, which the submitting host writes."""
        for folder in (self.path, self.path / SAMPLES_DIR, self.checkpoint.parent):
            for stale in folder.glob(".*.part"):
                if stale.name.startswith(f".{JOB_FILE}.") or (stale.is_dir()
                                                              and not stale.is_symlink()):
                    continue
                stale.unlink(missing_ok=True)

    def writer(self) -> str | None:
        """'process PID on HOST' while another process holds the folder's lock, else None.

        Only looks: creates no file (a folder without `.lock` has no writer), and a `.lock`
        that is no lock file has no writer."""
        if fcntl is None:
            return None
        try:
            fd = self._open_lock(os.O_RDONLY)
        except (OSError, RunDirectoryError):
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def check_not_busy(self) -> None:
        """Raise the lock's refusal when another process is writing this folder, or when its
        `.lock` is no lock file (see `lock`)."""
        problem = _not_a_lock(self.lock_file)
        if problem is not None:
            raise self._bad_lock(problem)
        holder = self.writer()
        if holder is not None:
            raise self._busy(holder)

    def _busy(self, holder: str) -> RunDirectoryError:
        return RunDirectoryError(f"{self.path} is being written by {holder}; wait for it to "
                                 "finish or stop it")


def _not_a_lock(found: Path | os.stat_result) -> str | None:
    """What keeps `found` (a path, not followed, or an open file's stat) from being a lock file
    of its own, or None."""
    try:
        info = found if isinstance(found, os.stat_result) else os.lstat(found)
    except OSError:
        return None
    mode = info.st_mode
    if stat.S_ISREG(mode):
        return "a hard link to another file" if info.st_nlink > 1 else None
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def _read_holder(fd: int) -> str:
    """The lock file's 'PID HOST' as 'process PID on HOST' (a holder that has not written it
    yet is 'another process')."""
    try:
        pid, host = os.pread(fd, 512, 0).decode("utf-8", "replace").split()[:2]
    except (OSError, ValueError):
        return "another process"
    return f"process {pid} on {host}"


def started_runs(out: Path) -> list[RunDir]:
    """Every run folder directly under `out` that has a config, by name."""
    return [RunDir(p.parent) for p in sorted(Path(out).glob(f"*/{CONFIG_FILE}"))]
