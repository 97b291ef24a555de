"""Executing many RunSpecs: one process per run on CPU cores, live progress, a final summary.

On a CPU, one single-threaded process per run beats one run at a time with every thread for the
embedded world's small models once runs are a few hundred iterations long (measured by
experiments/benchmarks/bench_parallel_runs.py). Each run is independent and resumable, so a
failure in one run never stops or corrupts the others.

No orphans: only this process decides when the runs stop. Its child processes never see a
Ctrl-C (they start with SIGINT blocked and then ignore it); on KeyboardInterrupt `execute` stops
them itself and re-raises. They also watch this process, and exit within a second of its death,
however it died (`kill -9` included). Stopping a run at any moment is safe: its rows and
checkpoints are replaced whole and its folder's lock dies with it, so it resumes exactly.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from adaptscope.errors import ConfigError, RunDirectoryError
from adaptscope.spec import ExperimentConfig, RunSpec, spec_from_dict
from adaptscope.track.export import check_backends
from adaptscope.track.rundir import (
    RunDir,
    config_differences,
    describe_differences,
    started_runs,
)
from adaptscope.train.experiment import check_run_configs, run_specs


@dataclass
class PlannedRun:
    spec: RunSpec
    run_dir: Path
    status: str = "pending"  # pending, complete, running, done, failed, interrupted
    error: str = ""


def plan(specs: list[RunSpec], out: Path, console: Console | None = None,
         continue_unfinished: bool = False) -> list[PlannedRun]:
    """Map specs to run directories, one writer per folder.

    A run requested twice (`--methods tgan,tgan`, `--seeds 0,0`) is planned once, with a
    `warning:` line on `console`. A finished run with the same settings is kept; a finished or
    unfinished run with other settings is refused, naming the settings that differ; an
    unfinished one with the same settings needs --resume, unless `continue_unfinished` (a
    command whose runs are its own, such as `calibrate ewc`'s probes).
    """
    planned: dict[str, PlannedRun] = {}
    for spec in specs:
        seen = planned.get(spec.run_id)
        if seen is not None:
            differences = config_differences(seen.spec.to_dict(), spec.to_dict())
            if differences:  # two different runs whose names map to one folder
                raise RunDirectoryError(
                    f"two requested runs would share {seen.run_dir} with different settings "
                    f"({describe_differences(differences)}); give them distinct method names "
                    "(or, in a sweep, grid values that differ in more than punctuation)")
            (console or _console()).print(
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
        elif folder.is_started() and not continue_unfinished:
            folder.check_not_busy()
            raise RunDirectoryError(
                f"{folder.path} holds an unfinished run; pass --resume to continue it, or "
                "choose another --out")
        planned[spec.run_id] = run
    return list(planned.values())


def plan_experiment(configs: ExperimentConfig | list[ExperimentConfig], out: Path,
                    console: Console | None = None) -> list[PlannedRun]:
    """The runs of an experiment (or of each variant of a sweep: `load_sweep`) under `out`,
    their existing folders checked."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; give the folder that holds (or "
                          "will hold) the run folders")
    configs = configs if isinstance(configs, list) else [configs]
    specs = [spec for cfg in configs for spec in run_specs(cfg)]
    if not specs:
        raise ConfigError(f"experiment {configs[0].name}: no runs: methods and seeds must each "
                          "name at least one")
    check_run_configs(out / spec.run_id for spec in specs)
    return plan(specs, out, console)


def plan_resume(out: Path) -> list[PlannedRun]:
    """Every unfinished run under `out`, after checking each run folder's config."""
    if not out.is_dir():
        problem = "is not a folder" if out.exists() else "does not exist"
        raise ConfigError(f"--resume: {out} {problem}; give the --out folder of the runs to "
                          "continue")
    check_run_configs(folder.path for folder in started_runs(out))
    return unfinished_runs(out)


def unfinished_runs(out: Path) -> list[PlannedRun]:
    """Every run under `out` that has a config but has not finished its schedule."""
    return [PlannedRun(folder.read_spec(), folder.path) for folder in started_runs(out)
            if not folder.is_done()]


def run_label(spec: RunSpec) -> str:
    """A run as progress bars name it: `ewc s0`, or `ewc [ewc.lam=10] s0` in a sweep."""
    variant = f" [{spec.variant}]" if spec.variant else ""
    return f"{spec.method}{variant} s{spec.seed}"


def default_workers(runs: list[PlannedRun], device: str) -> int:
    """One run per CPU core on the CPU; on `cuda` one per GPU (each pinned to its own, see
    `_pin_gpu`); on one named GPU (`cuda:1`) one at a time."""
    if device == "cuda":
        return max(1, min(gpu_count(), len(runs)))
    if device != "cpu":
        return 1
    return max(1, min(os.cpu_count() or 1, len(runs)))


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _pin_gpu(gpus) -> None:
    """Give this worker a GPU of its own: the next free index from the parent's queue becomes
    its only visible device, so a run's `cuda` is that GPU. Set before torch touches CUDA."""
    with contextlib.suppress(queue.Empty):
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get_nowait())


def _console() -> Console:
    """A console that prints text as it is: run ids and errors hold brackets and colons."""
    return Console(emoji=False, highlight=False)


# Exit status of a child process that stops because `adaptscope run` died (nobody reads it).
ORPHANED_EXIT = 1
WATCH_PARENT_EVERY = 0.5  # seconds between a child's checks that its parent is alive


def _init_child(parent_pid: int, gpus=None) -> None:
    """Initializer of every child process (workers and the event queue's manager).

    Ctrl-C is the parent's to handle: the child ignores SIGINT. And the child does not outlive
    the parent: on every platform a daemon thread exits it within WATCH_PARENT_EVERY seconds of
    the parent's death, and on Linux the kernel kills it at once as well (PR_SET_PDEATHSIG).
    Exiting abruptly is safe: see the module docstring.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):  # an extra: the watchdog below is the mechanism
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="adaptscope-watch-parent",
                     daemon=True).start()
    if gpus is not None:
        _pin_gpu(gpus)


def _watch_parent(parent_pid: int) -> None:
    # Two signs of the parent's death: a new parent PID (POSIX re-parents an orphan) and, in a
    # process multiprocessing started, the parent's sentinel (the only sign on Windows).
    parent = mp.parent_process()
    while os.getppid() == parent_pid:
        if parent is None:
            time.sleep(WATCH_PARENT_EVERY)
            continue
        parent.join(WATCH_PARENT_EVERY)  # returns as soon as the parent has exited
        if not parent.is_alive():
            break
    os._exit(ORPHANED_EXIT)  # the parent died: stop now, as `kill -9` would


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Processes started inside start with SIGINT blocked (the signal mask is inherited), so a
    Ctrl-C before their initializer runs does not reach them either."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: the initializer alone
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _stop_workers(pool: ProcessPoolExecutor, grace: float = 5.0) -> None:
    """Cancel the runs not started and stop the running ones now (SIGTERM, then SIGKILL)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _stopped_on_error(pool: ProcessPoolExecutor) -> Iterator[None]:
    """Stop the pool's workers when the block raises (Ctrl-C included): without this, leaving
    the pool would wait for every submitted run to finish."""
    try:
        yield
    except BaseException:
        _stop_workers(pool)
        raise


def record_configs(runs: list[PlannedRun]) -> None:
    """Write each run's config before any run starts, so that a Ctrl-C at any moment (a run
    still waiting for a worker, or one stopped before it wrote anything) leaves every run
    listed by `adaptscope run --resume`."""
    for run in runs:
        folder = RunDir(run.run_dir)
        if not folder.is_started():
            with folder.lock():
                folder.write_spec(run.spec)


def record_log_to(runs: list[PlannedRun], backends: list[str]) -> None:
    """Record in each new run's folder where `--log-to` exports its rows (or that it exports
    nowhere), so the run and every later `--resume` of it export as asked, on any executor.
    The backends' packages are checked first: a missing one stops before anything is written."""
    check_backends(backends)
    for run in runs:
        folder = RunDir(run.run_dir)
        if backends or folder.log_to_file.exists():
            with folder.lock():
                folder.write_log_to(backends)


def check_recorded_log_to(runs: list[PlannedRun]) -> None:
    """Before resuming: the packages of the exports the runs recorded must be installed."""
    check_backends(dict.fromkeys(b for run in runs for b in RunDir(run.run_dir).read_log_to()))


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
    """Run every pending run, showing a progress bar per run with ETA and latest metrics.

    On KeyboardInterrupt (Ctrl-C) the worker processes are stopped before it is re-raised; the
    interrupted runs are left resumable (`adaptscope run --resume`) with status "interrupted".
    """
    console = console or _console()
    todo = [r for r in runs if r.status == "pending"]
    if not todo:
        return
    record_configs(todo)
    columns = (TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[latest]}"))
    with Progress(*columns, console=console) as progress:
        tasks = {r.spec.run_id: progress.add_task(
            escape(run_label(r.spec)), total=r.spec.schedule.iterations,
            latest="waiting") for r in todo}

        def handle(event: dict[str, Any]) -> None:
            task = tasks[event["run_id"]]
            fields = {"completed": event["iteration"]}
            if event["kind"] == "eval":
                fields["latest"] = describe_latest(event)
            elif event["kind"] == "start":
                fields["latest"] = "evaluating"
            progress.update(task, **fields)

        try:
            if workers <= 1:
                for run in todo:
                    _run_inline(run, handle, console)
            else:
                _run_in_workers(todo, workers, handle, console)
        except KeyboardInterrupt:
            for run in todo:
                if run.status == "pending":
                    run.status = "interrupted"
            raise


def _run_in_workers(todo: list[PlannedRun], workers: int, handle, console: Console) -> None:
    ctx = mp.get_context("spawn")
    parent = (os.getpid(),)
    with contextlib.ExitStack() as stack:
        with _sigint_blocked():  # every child is started here
            manager = SyncManager(ctx=ctx)
            manager.start(_init_child, parent)
            stack.enter_context(manager)
            initargs = (*parent, _gpu_queue(manager, todo, workers))
            pool = stack.enter_context(ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_init_child, initargs=initargs))
            stack.enter_context(_stopped_on_error(pool))
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


def _gpu_queue(manager: SyncManager, todo: list[PlannedRun], workers: int):
    """The GPU indices the workers take one each, when the runs ask for `cuda` on a machine
    with several GPUs (None otherwise: nothing is pinned)."""
    n = gpu_count() if all(r.spec.device == "cuda" for r in todo) else 0
    if n < 2:
        return None
    gpus = manager.Queue()
    for index in range(min(n, workers)):
        gpus.put(index)
    return gpus


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
    console.print(f"[red]{escape(run.spec.run_id)} failed:[/red] {escape(run.error)}",
                  emoji=False, highlight=False)
    if os.environ.get("ADAPTSCOPE_DEBUG"):
        console.print("".join(traceback.format_exception(err)), markup=False, emoji=False,
                      highlight=False)
