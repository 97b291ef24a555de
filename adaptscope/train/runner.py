"""Executing many RunSpecs: one process per run on CPU cores, live progress, a final summary.

On a CPU, one single-threaded process per run beats one run at a time with every thread for the
embedded world's small models once runs are a few hundred iterations long (measured by
experiments/benchmarks/bench_parallel_runs.py). Each run is independent and resumable, so a
failure in one run never stops or corrupts the others.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import traceback
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from adaptscope.errors import RunDirectoryError
from adaptscope.spec import RunSpec, spec_from_dict
from adaptscope.track.rundir import (
    RunDir,
    config_differences,
    describe_differences,
    started_runs,
)


@dataclass
class PlannedRun:
    spec: RunSpec
    run_dir: Path
    status: str = "pending"  # pending, complete, running, done, failed
    error: str = ""


def plan(specs: list[RunSpec], out: Path, console: Console | None = None) -> list[PlannedRun]:
    """Map specs to run directories, one writer per folder.

    A run requested twice (`--methods tgan,tgan`, `--seeds 0,0`) is planned once, with a
    `warning:` line on `console`. A finished run with the same settings is kept; a finished or
    unfinished run with other settings is refused, naming the settings that differ; an
    unfinished one with the same settings needs --resume.
    """
    planned: dict[str, PlannedRun] = {}
    for spec in specs:
        seen = planned.get(spec.run_id)
        if seen is not None:
            differences = config_differences(seen.spec.to_dict(), spec.to_dict())
            if differences:  # two different runs whose names map to one folder
                raise RunDirectoryError(
                    f"two requested runs would share {seen.run_dir} with different settings "
                    f"({describe_differences(differences)}); give them distinct method names")
            (console or Console()).print(
                f"warning: {spec.run_id} is requested twice (a method or seed listed twice?); "
                "running it once", markup=False, highlight=False, soft_wrap=True)
            continue
        folder = RunDir(out / spec.run_id)
        run = PlannedRun(spec, folder.path)
        differences = folder.differences(spec)
        if differences:
            state = "a finished" if folder.is_done() else "an unfinished"
            raise RunDirectoryError(
                f"{folder.path} holds {state} run with other settings "
                f"({describe_differences(differences)}); choose another --out, or delete "
                f"{folder.path} to run it with these settings")
        if folder.is_done():
            run.status = "complete"
        elif folder.is_started():
            folder.check_not_busy()
            raise RunDirectoryError(
                f"{folder.path} holds an unfinished run; pass --resume to continue it, or "
                "choose another --out")
        planned[spec.run_id] = run
    return list(planned.values())


def unfinished_runs(out: Path) -> list[PlannedRun]:
    """Every run under `out` that has a config but has not finished its schedule."""
    return [PlannedRun(folder.read_spec(), folder.path) for folder in started_runs(out)
            if not folder.is_done()]


def default_workers(runs: list[PlannedRun], device: str) -> int:
    if device != "cpu":
        return 1
    return max(1, min(os.cpu_count() or 1, len(runs)))


def _worker(spec_data: dict[str, Any], run_dir: str, events) -> None:
    # Imported here so that spawned processes start only what a run needs.
    from adaptscope.train.loop import run_adaptation

    run_adaptation(spec_from_dict(spec_data), Path(run_dir), on_event=events.put)


def describe_latest(event: dict[str, Any]) -> str:
    m = event.get("metrics") or {}
    if not m:
        return ""
    return f"FID {m.get('fid', float('nan')):.1f}  LPIPS {m.get('intra_lpips', float('nan')):.3f}"


def execute(runs: list[PlannedRun], workers: int, console: Console | None = None) -> None:
    """Run every pending run, showing a progress bar per run with ETA and latest metrics."""
    console = console or Console()
    todo = [r for r in runs if r.status == "pending"]
    if not todo:
        return
    columns = (TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[latest]}"))
    with Progress(*columns, console=console) as progress:
        tasks = {r.spec.run_id: progress.add_task(
            f"{r.spec.method} s{r.spec.seed}", total=r.spec.schedule.iterations,
            latest="waiting") for r in todo}

        def handle(event: dict[str, Any]) -> None:
            task = tasks[event["run_id"]]
            fields = {"completed": event["iteration"]}
            if event["kind"] == "eval":
                fields["latest"] = describe_latest(event)
            elif event["kind"] == "start":
                fields["latest"] = "evaluating"
            progress.update(task, **fields)

        if workers <= 1:
            for run in todo:
                _run_inline(run, handle, console)
            return
        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            events = manager.Queue()
            futures: dict[Future, PlannedRun] = {
                pool.submit(_worker, r.spec.to_dict(), str(r.run_dir), events): r for r in todo}
            pending = set(futures)
            while pending:
                try:
                    handle(events.get(timeout=0.2))
                except queue.Empty:
                    pass
                for fut in [f for f in pending if f.done()]:
                    pending.discard(fut)
                    _finish(futures[fut], fut.exception(), console)
            while not events.empty():
                handle(events.get())


def _run_inline(run: PlannedRun, handle, console: Console) -> None:
    from adaptscope.train.loop import run_adaptation

    try:
        run_adaptation(run.spec, run.run_dir, on_event=handle)
        _finish(run, None, console)
    except Exception as err:  # one failed run must not stop the others
        _finish(run, err, console)


def _finish(run: PlannedRun, err: BaseException | None, console: Console) -> None:
    if err is None:
        run.status = "done"
        return
    run.status = "failed"
    run.error = f"{type(err).__name__}: {err}"
    console.print(f"[red]{run.spec.run_id} failed:[/red] {run.error}")
    if os.environ.get("ADAPTSCOPE_DEBUG"):
        console.print("".join(traceback.format_exception(err)))
