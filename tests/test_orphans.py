"""No orphans: the processes `adaptscope run` starts stop with it, however it stops.

A `kill -9` of the parent stops its workers (and the event queue's manager) within seconds; a
Ctrl-C stops everything, leaves every run resumable, says how to resume, and exits 130.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _tiny_world import tiny_spec, write_experiment
from rich.console import Console

from adaptscope.track.rundir import RunDir
from adaptscope.train import runner

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and sessions")

RUNS = ("cli-sunglasses-tgan-s0", "cli-sunglasses-freezed-s0")


def _start(tmp_path: Path, source: Path) -> tuple[subprocess.Popen, Path, Path]:
    """`adaptscope run` in a session of its own, as a shell runs a foreground job."""
    config, out, log = tmp_path / "exp.toml", tmp_path / "runs", tmp_path / "output.txt"
    write_experiment(config, source, iterations=400, eval_every=50,
                     methods=("tgan", "freezed"), workers=2)
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "adaptscope.cli", "run", "--config", str(config), "--out",
             str(out), "--workers", "2"], env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, out, log


def _wait_for_workers(proc: subprocess.Popen, out: Path, log: Path,
                      checkpoints: bool = False) -> set[int]:
    """The workers' PIDs, from the run folders' locks (once both runs have saved a checkpoint,
    with `checkpoints`)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        pids = set()
        for run in RUNS:
            folder = RunDir(out / run)
            holder = folder.lock_file.read_text().split() if folder.lock_file.exists() else []
            if holder and (folder.checkpoint.exists() or not checkpoints):
                pids.add(int(holder[0]))
        if len(pids) == len(RUNS):
            return pids
        time.sleep(0.1)
    raise AssertionError(f"the runs did not start in time:\n{log.read_text()}")


def _children(pid: int) -> set[int]:
    """PIDs of the live processes whose parent is `pid` (none where there is no /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Running; a zombie (exited, not yet reaped by whoever adopted it) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a PID reused by another user's process
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: os.kill said it exists
    return state not in ("Z", "X")


def _wait_gone(pids: set[int], within: float) -> set[int]:
    """The PIDs still alive after `within` seconds (an empty set as soon as all are gone)."""
    deadline = time.monotonic() + within
    while True:
        alive = {pid for pid in pids if _alive(pid)}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _kill_group(proc: subprocess.Popen) -> None:
    """Clean up after a failed check: whatever of the session is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _assert_resumable(out: Path, checkpoints: bool) -> None:
    for run in RUNS:
        folder = RunDir(out / run)
        assert folder.is_started() and not folder.is_done(), run
        assert folder.checkpoint.exists() or not checkpoints, run
        assert folder.writer() is None, f"{run} is still locked by {folder.writer()}"
    assert sorted(r.run_dir.name for r in runner.unfinished_runs(out)) == sorted(RUNS)


@pytest.mark.slow
def test_workers_stop_when_the_parent_is_killed(source_checkpoint, tmp_path):
    proc, out, log = _start(tmp_path, source_checkpoint)
    try:
        workers = _wait_for_workers(proc, out, log, checkpoints=True)
        children = _children(proc.pid) | workers  # the workers, the manager, resource tracker
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        left = _wait_gone(children, within=10)
        assert not left, f"still running 10 s after the parent's SIGKILL: {sorted(left)}"
    finally:
        _kill_group(proc)
    _assert_resumable(out, checkpoints=True)


@pytest.mark.slow
def test_ctrl_c_stops_every_run_resumably_and_exits_130(source_checkpoint, tmp_path):
    proc, out, log = _start(tmp_path, source_checkpoint)
    try:
        workers = _wait_for_workers(proc, out, log)
        children = _children(proc.pid) | workers
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground group
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 30 s after Ctrl-C:\n{log.read_text()}") from None
        text = log.read_text()
        assert code == 130, text
        assert f"adaptscope run --resume --out {shlex.quote(str(out))}" in text, text
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
        left = _wait_gone(children, within=10)
        assert not left, f"still running after Ctrl-C: {sorted(left)}"
    finally:
        _kill_group(proc)
    _assert_resumable(out, checkpoints=False)  # stopped as early as it could be


def test_ctrl_c_before_a_run_starts_leaves_it_resumable(source_checkpoint, tmp_path,
                                                        monkeypatch):
    """A Ctrl-C while the first run is starting: the runs after it, which never started, are
    still continued by `--resume` (their configs are written before any run starts)."""
    specs = [tiny_spec(source_checkpoint, method=m) for m in ("tgan", "freezed", "cdc")]
    planned = runner.plan(specs, tmp_path / "runs", Console(file=open(os.devnull, "w")))

    def interrupted(run, handle, console):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_run_inline", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.execute(planned, workers=1, console=Console(file=open(os.devnull, "w")))
    resumed = runner.plan_resume(tmp_path / "runs")
    assert sorted(r.spec.run_id for r in resumed) == sorted(s.run_id for s in specs)
    assert all(r.spec == s for r, s in zip(sorted(resumed, key=lambda r: r.spec.run_id),
                                           sorted(specs, key=lambda s: s.run_id), strict=True))


# The child: says its PID once its watchdog runs, then works on.
_CHILD = """
import os, threading, time
from adaptscope.train.runner import _watch_parent
threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
print(os.getpid(), flush=True)
time.sleep(60)
"""
_PARENTS = {
    # a plain child process: the watchdog sees its parent PID change
    "subprocess": "import subprocess, sys\n"
                  f"subprocess.Popen([sys.executable, '-c', {_CHILD!r}])\n",
    # a spawned process, as the workers are: the parent's sentinel as well
    "multiprocessing": "import multiprocessing as mp\n"
                       "mp.get_context('spawn').Process(target=exec,"
                       f" args=({_CHILD!r},)).start()\n",
}


@pytest.mark.parametrize("kind", sorted(_PARENTS))
def test_a_child_exits_when_its_parent_dies(kind):
    """The portable watchdog alone (no PR_SET_PDEATHSIG): a middle process starts a child that
    watches it, and is killed; the child exits within a second or so."""
    parent = _PARENTS[kind] + "import time\ntime.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        pid = int(proc.stdout.readline())
        time.sleep(1.0)
        assert _alive(pid), "the child exited while its parent was alive"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not _wait_gone({pid}, within=5), "the orphaned child is still running"
    finally:
        proc.stdout.close()
        _kill_group(proc)


def test_a_failure_is_printed_as_it_is():
    console = Console(record=True, width=200)
    run = runner.PlannedRun(tiny_spec(Path("x.pt")), Path("runs/x"))
    runner._finish(run, ValueError("bad [bold]value[/bold] :smile: at [1, 2]"), console)
    assert run.status == "failed"
    assert "ValueError: bad [bold]value[/bold] :smile: at [1, 2]" in console.export_text()
