"""Where every run of a folder stands, read from the run folders (and the cluster's queue).

The run folders are the record, whichever executor wrote them: `DONE` marks a finished run,
`FAILED` holds the error that stopped the last attempt, the folder's lock is held while a process
writes it, and `job.json` names the cluster job that runs it. A cluster without an accounting
database cannot say how a job ended, so the queue (`squeue`) is asked only which jobs are still
waiting or running; everything else comes from the folders, which another machine that sees the
same files reads the same way.

A folder is read as untrusted: one whose config or trajectory cannot be read is `damaged` (with
the reason) and the others are still listed, and a job's log is read only as a bounded tail of a
regular file inside the jobs' log folder, whatever path `job.json` names.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from adaptscope.config import read_toml
from adaptscope.errors import ConfigError, TrajectoryError
from adaptscope.spec import ExecutorSpec
from adaptscope.track.rundir import CONFIG_FILE, JOB_FILE, RunDir
from adaptscope.track.store import load_trajectories

STATES = ("queued", "running", "done", "failed", "unfinished", "damaged")
LIVE = ("queued", "running")
LOG_TAIL_LINES = 8
LOG_TAIL_BYTES = 8192  # at most this much of the end of a job's log is read (logs grow large)
EXECUTOR_FILE = "executor.toml"  # in --out: the last submission's settings (`--resume` reuses)

QueueReader = Callable[[Iterable[str]], dict[str, str]]


@dataclass
class RunStatus:
    """One run folder's state and progress."""

    run_id: str
    path: Path
    method: str = ""
    seed: int | None = None
    target: str = ""
    iteration: int | None = None  # last recorded
    evaluation: str = ""  # kind of the last recorded row
    state: str = "unfinished"
    job_id: str = ""
    detail: str = ""  # why a run failed (and the end of its job's log) or is damaged


def read_job(folder: RunDir) -> dict:
    """The cluster job recorded for a run folder ({} for a run started locally, or a record
    that is not a JSON object)."""
    try:
        job = json.loads(folder.job_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return job if isinstance(job, dict) else {}


def log_folder(out: Path) -> Path | None:
    """The jobs' log folder, resolved: `executor.log_folder` of the last submission, inside
    `out`. None where the setting points outside `out`: a log is read from there only."""
    name = ExecutorSpec.log_folder
    try:
        name = str(read_toml(Path(out) / EXECUTOR_FILE).get("log_folder", name))
    except (ConfigError, OSError):
        pass  # never submitted (or unreadable): the default folder
    try:
        root = Path(out).resolve()
        logs = (root / name).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL in the name
        return None
    return logs if logs.is_relative_to(root) else None


def _read_end(path: Path) -> str:
    """The last LOG_TAIL_BYTES of a regular file (a FIFO or device is refused, not opened
    for a blocking read), without a partial first line."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        start = max(0, info.st_size - LOG_TAIL_BYTES)
        handle.seek(start)
        text = handle.read(LOG_TAIL_BYTES).decode("utf-8", errors="replace")
    if start and "\n" in text:
        text = text.split("\n", 1)[1]
    return text


def _log_tail(job: dict, logs: Path | None) -> str:
    """The end of the job's log. `job.json` may name any path, so only a file that resolves
    (symlinks followed) into the jobs' log folder is read."""
    refused = ""
    for key in ("stderr", "stdout"):
        recorded = job.get(key)
        if not isinstance(recorded, str) or not recorded:
            continue
        try:
            path = (logs / recorded).resolve() if logs is not None else None
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL in the name
            continue
        if path is None or not path.is_relative_to(logs):
            refused = f"(the job's log {recorded} is not in the jobs' log folder: not read)"
            continue
        try:
            lines = _read_end(path).splitlines()
        except OSError:
            continue
        if lines:
            return f"end of {path}:\n" + "\n".join(lines[-LOG_TAIL_LINES:])
    return refused


def run_folders(out: Path) -> list[RunDir]:
    """Every run folder directly under `out`: started (a config) or submitted (a job)."""
    names = {p.parent for p in Path(out).glob(f"*/{CONFIG_FILE}")}
    names |= {p.parent for p in Path(out).glob(f"*/{JOB_FILE}")}
    return [RunDir(p) for p in sorted(names)]


def _failure(folder: RunDir) -> str | None:
    try:
        return folder.failure()
    except ValueError:  # not UTF-8: the run did fail, its message is lost
        return f"{folder.failed_file} is not text"


def run_status(folder: RunDir, queue: dict[str, str], logs: Path | None = None) -> RunStatus:
    """The state of one run folder, given the queue's states of the cluster jobs and the jobs'
    log folder (`log_folder(out)`; without it no log is read). A config or trajectory that
    cannot be read makes the run `damaged`, with the reason, unless a job or process is still
    on it (then the reason is its detail)."""
    status = RunStatus(run_id=folder.path.name, path=folder.path)
    damage = []
    if folder.is_started():
        try:
            spec = folder.read_spec()
        except (ValueError, TypeError) as err:
            damage.append(str(err) if str(folder.config) in str(err) else
                          f"{folder.config}: {err}")
        else:
            variant = f" [{spec.variant}]" if spec.variant else ""  # a sweep's variant
            status.method, status.seed = spec.method + variant, spec.seed
            status.target = spec.target.label
    if folder.trajectory.exists():
        try:
            df = load_trajectories(folder.path)
        except (TrajectoryError, ValueError) as err:
            damage.append(str(err))
        else:
            if len(df):
                last = df.sort_values("iteration").iloc[-1]
                status.iteration, status.evaluation = int(last["iteration"]), last["evaluation"]
    job = read_job(folder)
    status.job_id = str(job.get("job_id", ""))
    queued = queue.get(status.job_id, "")
    failure = _failure(folder)
    if folder.is_done():
        status.state = "done"
    elif folder.writer() is not None or queued in ("RUNNING", "COMPLETING"):
        status.state = "running"
    elif queued:  # PENDING, REQUEUED, CONFIGURING, ...
        status.state = "queued"
    elif failure is not None:
        status.state = "failed"
        status.detail = "\n".join(filter(None, (failure, _log_tail(job, logs))))
    elif job and not folder.is_started():  # the job left the queue without starting the run
        status.state = "failed"
        status.detail = "\n".join(filter(None, ("the job ended before the run started",
                                                _log_tail(job, logs))))
    if damage:
        if status.state not in LIVE:
            status.state = "damaged"
        status.detail = "\n".join([*damage, status.detail]).rstrip("\n")
    return status


def folder_status(out: Path, queue_reader: QueueReader | None = None) -> list[RunStatus]:
    """Every run under `out`; `queue_reader` (job ids -> queue state of those still queued or
    running, e.g. `adaptscope.train.slurm.squeue_states`) is asked once for all their jobs.
    A folder that cannot be read is listed as damaged; the others are still listed."""
    folders = run_folders(out)
    jobs = [str(read_job(f).get("job_id", "")) for f in folders]
    queue = queue_reader([j for j in jobs if j]) if queue_reader else {}
    logs = log_folder(out)
    statuses = []
    for folder in folders:
        try:
            statuses.append(run_status(folder, queue, logs))
        except OSError as err:
            statuses.append(RunStatus(run_id=folder.path.name, path=folder.path,
                                      state="damaged", detail=f"{folder.path}: {err}"))
    return statuses
