"""Run folders as users expect them: one writer per folder, no silent re-use with other settings,
whole files after a crash, and `--resume` that continues runs exactly as they were configured."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from _cli_checks import hold_lock
from _tiny_world import metric_rows, tiny_spec, write_experiment
from _trajectory_fixtures import make_run
from rich.console import Console
from typer.testing import CliRunner

import adaptscope.images
import adaptscope.track.rundir
import adaptscope.track.tracker
from adaptscope import load_trajectories
from adaptscope.cli import app
from adaptscope.errors import RunDirectoryError
from adaptscope.files import atomic_write
from adaptscope.images import save_grid
from adaptscope.spec import ScheduleSpec
from adaptscope.track import rundir
from adaptscope.track.external import track_checkpoints
from adaptscope.track.rundir import RunDir, config_differences, describe_differences
from adaptscope.track.store import append_rows
from adaptscope.train import runner
from adaptscope.train.experiment import load_experiment
from adaptscope.train.loop import run_adaptation

ROOT = Path(__file__).resolve().parents[1]
cli = CliRunner(env={"COLUMNS": "400"})  # no wrapping inside the messages checked


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# --- a finished (or unfinished) run is never re-used with other settings ---------------------


def test_config_differences_are_dotted_keys_with_both_values():
    stored = {"seed": 0, "schedule": {"iterations": 1000, "eval_every": 100},
              "method_params": {}, "plugins": []}
    requested = {"seed": 0, "schedule": {"iterations": 500, "eval_every": 100},
                 "method_params": {"n_fisher": 4}, "plugins": ["mine.py"]}
    assert config_differences(stored, requested) == [
        "method_params.n_fisher: <absent> (stored) vs 4 (requested)",
        "plugins: [] (stored) vs ['mine.py'] (requested)",
        "schedule.iterations: 1000 (stored) vs 500 (requested)",
    ]
    assert config_differences(stored, stored) == []
    many = [f"k{i}: {i} (stored) vs {i + 1} (requested)" for i in range(8)]
    assert describe_differences(many).endswith("; k4: 4 (stored) vs 5 (requested); and 3 more")


def test_write_spec_names_the_settings_that_differ(source_checkpoint, tmp_path):
    folder = RunDir(tmp_path / "run")
    spec = tiny_spec(source_checkpoint)
    folder.write_spec(spec)
    folder.write_spec(spec)  # the same config again is fine
    other = replace(spec, schedule=ScheduleSpec(iterations=8, eval_every=2), device="meta")
    with pytest.raises(RunDirectoryError, match="different config") as info:
        folder.write_spec(other)
    assert "schedule.iterations: 4 (stored) vs 8 (requested)" in str(info.value)
    assert "device: 'cpu' (stored) vs 'meta' (requested)" in str(info.value)


def _stored(folder: Path, spec, done: bool) -> RunDir:
    """A run folder as a run leaves it (no training needed for planning)."""
    run = RunDir(folder / spec.run_id)
    run.write_spec(spec)
    if done:
        run.mark_done("finished")
    return run


def test_plan_keeps_a_finished_run_only_with_the_same_settings(source_checkpoint, tmp_path):
    spec = tiny_spec(source_checkpoint)
    _stored(tmp_path, spec, done=True)
    assert [r.status for r in runner.plan([spec], tmp_path)] == ["complete"]

    longer = replace(spec, schedule=ScheduleSpec(iterations=1000, eval_every=2))
    with pytest.raises(RunDirectoryError) as info:
        runner.plan([longer], tmp_path)
    text = str(info.value)
    assert "holds a finished run with other settings" in text
    assert "schedule.iterations: 4 (stored) vs 1000 (requested)" in text
    assert "another --out" in text and "delete" in text


def test_plan_names_the_settings_of_an_unfinished_run_with_other_settings(source_checkpoint,
                                                                          tmp_path):
    spec = tiny_spec(source_checkpoint)
    _stored(tmp_path, spec, done=False)
    with pytest.raises(RunDirectoryError, match="pass --resume"):
        runner.plan([spec], tmp_path)
    with pytest.raises(RunDirectoryError, match=r"holds an unfinished run with other settings "
                       r"\(train\.lr: 0\.002 \(stored\) vs 0\.1 \(requested\)\)"):
        runner.plan([replace(spec, train=replace(spec.train, lr=0.1))], tmp_path)


def test_plan_runs_a_run_requested_twice_once_with_a_warning(source_checkpoint, tmp_path):
    spec = tiny_spec(source_checkpoint)
    out = io.StringIO()
    planned = runner.plan([spec, spec, replace(spec, seed=1), replace(spec, seed=1)], tmp_path,
                          Console(file=out, width=80))
    assert [r.spec.seed for r in planned] == [0, 1]
    assert out.getvalue().splitlines() == [
        f"warning: {spec.run_id} is requested twice (a method or seed listed twice?); running "
        "it once",
        f"warning: {replace(spec, seed=1).run_id} is requested twice (a method or seed listed "
        "twice?); running it once"]


def test_cli_keeps_a_finished_run_once_and_refuses_other_settings(source_checkpoint, tmp_path):
    config = write_experiment(tmp_path / "exp.toml", source_checkpoint)
    out = tmp_path / "runs"
    _stored(out, load_experiment(config).runs()[0], done=True)

    same = cli.invoke(app, ["run", "--config", str(config), "--methods", "tgan,tgan",
                            "--seeds", "0,0", "--out", str(out)])
    assert same.exit_code == 0, same.output
    assert "warning: cli-sunglasses-tgan-s0 is requested twice" in one_line(same.stdout)
    assert "cli-sunglasses-tgan-s0: already complete, kept" in one_line(same.stdout)

    other = cli.invoke(app, ["run", "--config", str(config), "--iterations", "20",
                             "--out", str(out)])
    assert other.exit_code == 2
    assert "schedule.iterations: 40 (stored) vs 20 (requested)" in one_line(other.stderr)
    assert {p.name for p in (out / "cli-sunglasses-tgan-s0").iterdir()} == {
        rundir.CONFIG_FILE, rundir.DONE_FILE}  # untouched


# --- --resume continues runs exactly as they were configured ---------------------------------


@pytest.mark.parametrize("args,named", [
    (["--iterations", "2000"], "--iterations"),
    (["--set", "train.lr=0.1", "--seeds", "0,1"], "--seeds, --set"),
    (["--device", "cuda", "--methods", "cdc"], "--methods, --device"),
    (["--plugin", "x.py", "--eval-every", "5", "--target", "babies"],
     "--target, --eval-every, --plugin"),
])
def test_resume_with_settings_that_change_a_run_is_refused(args, named, source_checkpoint,
                                                           tmp_path):
    run = _stored(tmp_path, tiny_spec(source_checkpoint), done=False)
    before = sorted(run.path.iterdir())
    result = cli.invoke(app, ["run", "--resume", "--out", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    text = one_line(result.stderr)
    assert "--resume continues runs exactly as they were configured" in text
    assert f"takes no {named} (only --out and --workers)" in text
    assert sorted(run.path.iterdir()) == before  # nothing was started


def test_resume_of_a_missing_folder_is_an_error_and_of_a_finished_one_a_message(tmp_path):
    missing = tmp_path / "no-such-runs"
    result = cli.invoke(app, ["run", "--resume", "--out", str(missing)])
    assert result.exit_code == 2
    assert f"--resume: {missing} does not exist" in one_line(result.stderr)
    assert not missing.exists()
    (tmp_path / "a-file").touch()
    result = cli.invoke(app, ["run", "--resume", "--out", str(tmp_path / "a-file")])
    assert result.exit_code == 2 and "is not a folder" in one_line(result.stderr)

    result = cli.invoke(app, ["run", "--resume", "--workers", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"nothing to resume under {tmp_path}" in one_line(result.stdout)


# --- one writer per run folder ----------------------------------------------------------------




def test_a_second_process_is_refused_and_a_killed_holder_blocks_nothing(source_checkpoint,
                                                                        tmp_path):
    spec = tiny_spec(source_checkpoint)
    folder = RunDir(tmp_path / spec.run_id)
    holder = hold_lock(folder.path)
    try:
        busy = f"{folder.path} is being written by process {holder.pid} on " \
               f"{socket.gethostname()}; wait for it to finish or stop it"
        with pytest.raises(RunDirectoryError) as info, folder.lock():
            pass
        assert str(info.value) == busy
        assert folder.writer() == f"process {holder.pid} on {socket.gethostname()}"
        with pytest.raises(RunDirectoryError) as info:
            run_adaptation(spec, folder.path)
        assert str(info.value) == busy
        with pytest.raises(RunDirectoryError) as info:
            track_checkpoints(spec, [], folder.path)  # tracking a run elsewhere: the same
        assert str(info.value) == busy
        assert sorted(p.name for p in folder.path.iterdir()) == [rundir.LOCK_FILE]  # untouched
        with pytest.raises(RunDirectoryError) as info:  # nor does the store's writer get in
            with folder.lock():
                append_rows(folder.path, [_row(0)], config={}, protocol={})
        assert str(info.value) == busy and not folder.trajectory.exists()
        folder.write_spec(spec)  # `run` without --resume names the writer, not --resume
        with pytest.raises(RunDirectoryError, match="is being written by process"):
            runner.plan([spec], tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    assert folder.lock_file.exists()  # left behind by the killed holder...
    assert folder.writer() is None  # ...but the OS released its lock
    with folder.lock():
        assert folder.lock_file.read_text() == f"{os.getpid()} {socket.gethostname()}\n"
    assert folder.lock_file.read_text() == ""  # no stale holder once released


def _row(iteration: int) -> dict:
    return {"run_id": "r0", "method": "tgan", "source": "s", "target": "t", "shots": 10,
            "seed": 0, "iteration": iteration, "images_seen": iteration * 4,
            "fid": float(iteration)}


_APPENDER = textwrap.dedent("""
    import sys, time
    from adaptscope.errors import RunDirectoryError
    from adaptscope.track.rundir import RunDir
    from adaptscope.track.store import append_rows

    folder, first = RunDir(sys.argv[1]), int(sys.argv[2])
    refused = 0
    for iteration in range(first, 40, 2):
        row = {"run_id": "r0", "method": "tgan", "source": "s", "target": "t", "shots": 10,
               "seed": 0, "iteration": iteration, "images_seen": iteration * 4,
               "fid": float(iteration)}
        while True:
            try:
                with folder.lock():
                    append_rows(folder.path, [row], config={}, protocol={})
                    time.sleep(0.005)
                break
            except RunDirectoryError:  # the other process is appending: wait for it
                refused += 1
                time.sleep(0.002)
    print(refused)
""")


def test_two_processes_appending_through_the_lock_lose_no_row(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", _APPENDER, str(folder), str(first)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT) for first in (0, 1)]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    rows = load_trajectories(folder)
    assert rows["iteration"].tolist() == list(range(40))  # every row of both writers


# --- whole files, with the modes users expect -------------------------------------------------


def test_a_run_writes_every_file_through_the_atomic_writer(source_checkpoint, tmp_path,
                                                           monkeypatch, umask_022):
    written: list[Path] = []

    def spy(path, write):
        written.append(Path(path))
        return atomic_write(path, write)

    for module in (adaptscope.track.rundir, adaptscope.images, adaptscope.track.tracker):
        monkeypatch.setattr(module, "atomic_write", spy)
    run = RunDir(run_adaptation(tiny_spec(source_checkpoint), tmp_path / "run"))

    expected = {run.config, run.path / rundir.DONE_FILE, run.shots_npy, run.shots_png,
                *(run.sample(i, s) for i in (0, 2, 4) for s in ("png", "npy"))}
    assert expected <= set(written)
    files = [p for p in run.path.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".part")]
    modes = {p.relative_to(run.path).as_posix(): oct(p.stat().st_mode & 0o777) for p in files}
    assert modes[rundir.TRAJECTORY_FILE] == oct(0o644)
    assert set(modes.values()) == {oct(0o644)}, modes
    assert metric_rows(run.path)["iteration"].tolist() == [0, 2, 4]


def test_the_trajectory_gets_the_umasks_mode(tmp_path):
    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
        folder = tmp_path / f"run{umask:o}"
        folder.mkdir()
        old = os.umask(umask)
        try:
            append_rows(folder, [_row(0)], config={}, protocol={})
        finally:
            os.umask(old)
        assert (folder / rundir.TRAJECTORY_FILE).stat().st_mode & 0o777 == mode


def test_a_grid_save_that_fails_midway_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "samples" / "iter_000000.png"
    images = np.zeros((2, 4, 4, 3), np.uint8)
    save_grid(images, path)
    before = path.read_bytes()

    def broken(self, fp, format=None, **params):
        handle = open(fp, "wb") if isinstance(fp, (str, os.PathLike)) else fp
        handle.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(adaptscope.images.Image.Image, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_grid(images + 255, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_report_into_a_folder_with_a_report_names_what_it_replaces(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "tgan", 0, iterations=(0, 500), samples=False)
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # not the report's: neither named nor replaced

    first = cli.invoke(app, ["report", str(runs), "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "replacing" not in first.output

    again = cli.invoke(app, ["report", str(runs), "--out", str(out)])
    assert again.exit_code == 0, again.output
    lines = [line for line in again.stderr.splitlines() if line.startswith("replacing ")]
    assert len(lines) == 1
    assert lines[0].startswith("replacing index.html, summary.csv, summary.md, figures/")
    assert "figures/realism.png" in lines[0] and "notes.txt" not in lines[0]
    assert (out / "notes.txt").read_text() == "mine"
    assert str(out / "index.html") in again.stdout.splitlines()  # stdout stays the file list


def test_looking_for_a_writer_creates_nothing(tmp_path):
    folder = RunDir(tmp_path / "new" / "run")
    assert folder.writer() is None and not folder.path.exists()
    with folder.lock():  # the lock creates the folder it guards
        assert folder.lock_file.exists()
