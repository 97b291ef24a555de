"""Runs as one SLURM job array, through submitit.

Every run is planned and validated on the submitting host (`adaptscope run` does that before it
calls `submit`), so a bad config fails before any job exists. Each array task runs exactly one
RunSpec into its own run folder, which `run_adaptation` resumes from its last checkpoint: a task
that SLURM preempts or times out is sent SIGUSR2 first, and submitit's checkpointing hook
(`RunJob.checkpoint`) requeues it with the same arguments, so it continues where the folder says,
losing and duplicating no row. The submitting host writes `job.json` into each run folder and
the executor settings into `--out`; jobs write only their own run folder.

A small cluster often has no accounting database, so `sacct` (which submitit polls for job
states) fails there: states are taken from the run folders and from `squeue` instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from adaptscope.config import dumps_toml, from_dict, read_toml
from adaptscope.errors import ConfigError
from adaptscope.files import atomic_write
from adaptscope.spec import ExecutorSpec, spec_from_dict
from adaptscope.track.rundir import RunDir
from adaptscope.track.status import EXECUTOR_FILE, RunStatus, folder_status

POLL_SECONDS = 2.0


class RunJob:
    """The callable each array task runs: one run, resumed from its folder if it has one.

    `checkpoint` is submitit's hook on preemption and timeout: it requeues the same call, which
    continues from the run folder's last checkpoint."""

    def __call__(self, spec_data: dict[str, Any], run_dir: str) -> str:
        from adaptscope.train.loop import run_adaptation

        run_adaptation(spec_from_dict(spec_data), Path(run_dir))
        return run_dir

    def checkpoint(self, spec_data: dict[str, Any], run_dir: str) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, spec_data, run_dir)


def executor_parameters(settings: ExecutorSpec) -> dict[str, Any]:
    """submitit `SlurmExecutor` parameters for the settings (empty ones left to the cluster)."""
    extra = dict(option[2:].split("=", 1) for option in settings.sbatch)
    params: dict[str, Any] = {
        "time": settings.time_min,
        "cpus_per_task": settings.cpus_per_run,
        "partition": settings.partition or None,
        "account": settings.account or None,
        "qos": settings.qos or None,
        "mem": f"{int(settings.mem_gb * 1024)}M" if settings.mem_gb else None,
        "gpus_per_node": settings.gpus_per_run or None,
        "array_parallelism": settings.max_parallel or None,
        "additional_parameters": {k.replace("-", "_"): v for k, v in extra.items()} or None,
        "job_name": "adaptscope",
    }
    return {k: v for k, v in params.items() if v is not None}


def slurm_missing() -> str | None:
    """Why jobs cannot be submitted from here, or None."""
    for command in ("sbatch", "squeue"):
        if shutil.which(command) is None:
            return (f"`{command}` is not on PATH: --executor slurm submits from a machine of a "
                    "SLURM cluster (a login node); use --executor local elsewhere")
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "the submitit package is missing: pip install submitit"
    return None


def save_settings(out: Path, settings: ExecutorSpec) -> None:
    text = dumps_toml(asdict(settings)).encode("utf-8")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / EXECUTOR_FILE, lambda handle: handle.write(text))


def saved_settings(out: Path) -> ExecutorSpec:
    """The executor settings of the last submission into `out` (defaults if none)."""
    path = out / EXECUTOR_FILE
    if not path.is_file():
        return ExecutorSpec(kind="slurm")
    return from_dict(ExecutorSpec, {**read_toml(path), "kind": "slurm"}, str(path))


def submit(runs: list, settings: ExecutorSpec, out: Path) -> list[str]:
    """Submit `runs` (planned runs with `spec` and `run_dir`) as one job array; return the job
    ids, recorded in each run folder's `job.json`."""
    import submitit

    reason = slurm_missing()
    if reason:
        raise ConfigError(reason)
    alive = {s.path for s in folder_status(out, squeue_states)
             if s.state in ("queued", "running")}
    busy = [r.run_dir.name for r in runs if r.run_dir in alive]
    if busy:
        raise ConfigError(f"{', '.join(busy)}: queued or running already; wait for them (see "
                          f"`adaptscope status {out}`) or cancel their jobs first")
    logs = out / settings.log_folder
    executor = submitit.SlurmExecutor(folder=logs / "%j")
    executor.update_parameters(**executor_parameters(settings))
    save_settings(out, settings)
    jobs = executor.map_array(RunJob(), [r.spec.to_dict() for r in runs],
                              [str(r.run_dir.resolve()) for r in runs])
    for run, job in zip(runs, jobs, strict=True):
        folder = RunDir(run.run_dir)
        folder.path.mkdir(parents=True, exist_ok=True)
        record = {"executor": "slurm", "job_id": str(job.job_id),
                  "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
                  "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        text = (json.dumps(record, indent=2) + "\n").encode("utf-8")
        atomic_write(folder.job_file, lambda handle, text=text: handle.write(text))
    return [str(job.job_id) for job in jobs]


def squeue_states(job_ids: Iterable[str]) -> dict[str, str]:
    """SLURM state (PENDING, RUNNING, ...) of the jobs still in the queue, by job id; {} where
    there is no `squeue`. Array tasks are listed one per line (`-r`), as `<array>_<task>`."""
    ids = sorted(set(job_ids))
    if not ids or shutil.which("squeue") is None:
        return {}
    arrays = sorted({i.split("_")[0] for i in ids})
    result = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(arrays)],
                            capture_output=True, text=True, timeout=60)
    states = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ids:
            states[parts[0]] = parts[1]
    return states


def follow(out: Path, run_dirs: list[Path],
           on_status: Callable[[list[RunStatus]], None]) -> list[RunStatus]:
    """Poll the run folders and the queue until no run of `run_dirs` is queued or running;
    `on_status` gets every poll's states (for progress bars). Returns the final states."""
    wanted = set(run_dirs)
    while True:
        statuses = [s for s in folder_status(out, squeue_states) if s.path in wanted]
        on_status(statuses)
        if not any(s.state in ("queued", "running") for s in statuses):
            return statuses
        time.sleep(POLL_SECONDS)
