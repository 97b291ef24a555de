"""Where every run of a folder stands, read from the run folders (and the cluster's queue).

The run folders are the record, whichever executor wrote them: `DONE` marks a finished run,
`FAILED` holds the error that stopped the last attempt, the folder's lock is held while a process
writes it, and `job.json` names the cluster job that runs it. A cluster without an accounting
database cannot say how a job ended, so the queue (`squeue`) is asked only which jobs are still
waiting or running; everything else comes from the folders, which another machine that sees the
same files reads the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from adaptscope.errors import TrajectoryError
from adaptscope.track.rundir import CONFIG_FILE, JOB_FILE, RunDir
from adaptscope.track.store import load_trajectories

STATES = ("queued", "running", "done", "failed", "unfinished")
LOG_TAIL_LINES = 8

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
    detail: str = ""  # the error and the end of the job's log, for a failed run


def read_job(folder: RunDir) -> dict:
    """The cluster job recorded for a run folder ({} for a run started locally)."""
    try:
        return json.loads(folder.job_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _log_tail(job: dict) -> str:
    for key in ("stderr", "stdout"):
        path = Path(job.get(key, "") or "/nonexistent")
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        if lines:
            return f"end of {path}:\n" + "\n".join(lines[-LOG_TAIL_LINES:])
    return ""


def run_folders(out: Path) -> list[RunDir]:
    """Every run folder directly under `out`: started (a config) or submitted (a job)."""
    names = {p.parent for p in Path(out).glob(f"*/{CONFIG_FILE}")}
    names |= {p.parent for p in Path(out).glob(f"*/{JOB_FILE}")}
    return [RunDir(p) for p in sorted(names)]


def run_status(folder: RunDir, queue: dict[str, str]) -> RunStatus:
    """The state of one run folder, given the queue's states of the cluster jobs."""
    status = RunStatus(run_id=folder.path.name, path=folder.path)
    if folder.is_started():
        spec = folder.read_spec()
        status.method, status.seed, status.target = spec.method, spec.seed, spec.target.label
    if folder.trajectory.exists():
        try:
            df = load_trajectories(folder.path)
        except TrajectoryError as err:
            status.detail = str(err)
        else:
            if len(df):
                last = df.sort_values("iteration").iloc[-1]
                status.iteration, status.evaluation = int(last["iteration"]), last["evaluation"]
    job = read_job(folder)
    status.job_id = str(job.get("job_id", ""))
    queued = queue.get(status.job_id, "")
    failure = folder.failure()
    if folder.is_done():
        status.state = "done"
    elif folder.writer() is not None or queued in ("RUNNING", "COMPLETING"):
        status.state = "running"
    elif queued:  # PENDING, REQUEUED, CONFIGURING, ...
        status.state = "queued"
    elif failure is not None:
        status.state = "failed"
        status.detail = "\n".join(filter(None, (failure, _log_tail(job))))
    elif job and not folder.is_started():  # the job left the queue without starting the run
        status.state = "failed"
        status.detail = "\n".join(filter(None, ("the job ended before the run started",
                                                _log_tail(job))))
    return status


def folder_status(out: Path, queue_reader: QueueReader | None = None) -> list[RunStatus]:
    """Every run under `out`; `queue_reader` (job ids -> queue state of those still queued or
    running, e.g. `adaptscope.train.slurm.squeue_states`) is asked once for all their jobs."""
    folders = run_folders(out)
    jobs = [str(read_job(f).get("job_id", "")) for f in folders]
    queue = queue_reader([j for j in jobs if j]) if queue_reader else {}
    return [run_status(folder, queue) for folder in folders]
