"""A run folder is written only through files adaptscope creates there: a link or a FIFO planted
at a name it writes (`.lock`, a temporary, `job.json`) is refused or replaced, never written
through; a full disk names the checkpoint; a second writer gets one refusal line."""

from __future__ import annotations

import errno
import os
import signal
import socket
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import submitit
from _cli_checks import hold_lock
from _tiny_world import tiny_spec, write_experiment
from typer.testing import CliRunner

import adaptscope.files
from adaptscope.cli import app
from adaptscope.errors import EXIT_BAD_INPUT, CheckpointError, RunDirectoryError
from adaptscope.files import atomic_write
from adaptscope.models import save_checkpoint
from adaptscope.spec import ExecutorSpec
from adaptscope.track.rundir import RunDir
from adaptscope.train import runner, slurm
from adaptscope.train.experiment import load_experiment
from adaptscope.train.loop import run_adaptation

ROOT = Path(__file__).resolve().parents[1]
cli = CliRunner(env={"COLUMNS": "400"})  # no wrapping inside the messages checked
VICTIM = b"a file of the user's that no run may touch\n"
STALE_CHECKPOINT = ".latest.pt.k1lled.part"


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error: ")]


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_bytes(VICTIM)
    return path


@pytest.fixture
def config(tmp_path, source_checkpoint) -> Path:
    return write_experiment(tmp_path / "exp.toml", source_checkpoint, iterations=2, eval_every=2)


def _folder(config: Path, out: Path) -> RunDir:
    return RunDir(out / load_experiment(config).runs()[0].run_id)


def _unfinished(config: Path, out: Path) -> RunDir:
    """A run folder as a killed run leaves it: config, rows and checkpoint, no DONE."""
    folder = _folder(config, out)
    run_adaptation(load_experiment(config).runs()[0], folder.path)
    (folder.path / "DONE").unlink()
    return folder


class Hung(Exception):
    """Not an OSError, which the code under test may catch."""


@contextmanager
def deadline(seconds: float):
    """Fail instead of hanging (opening a FIFO can wait for a writer forever)."""
    def expired(signum, frame):
        raise Hung(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _assert_refused(result, lock: Path) -> None:
    assert result.exit_code == EXIT_BAD_INPUT, (result.exception, result.output)
    assert result.stderr.strip().count("\n") == 0, result.stderr  # one line, nothing else
    (line,) = error_lines(result.stderr)
    assert str(lock) in line and "delete it" in line


# --- .lock -----------------------------------------------------------------------------------


@pytest.mark.parametrize("resume", [False, True], ids=["run", "resume"])
def test_a_lock_planted_as_a_link_is_refused_and_its_target_kept(resume, config, victim,
                                                                  tmp_path):
    out = tmp_path / "runs"
    if resume:
        folder = _unfinished(config, out)
        folder.lock_file.unlink()
        args = ["run", "--resume", "--out", str(out)]
    else:
        folder = _folder(config, out)
        folder.path.mkdir(parents=True)
        args = ["run", "--config", str(config), "--out", str(out)]
    before = sorted(p.name for p in folder.path.iterdir())
    folder.lock_file.symlink_to(victim)

    result = cli.invoke(app, args)
    _assert_refused(result, folder.lock_file)
    assert "symbolic link" in result.stderr
    assert victim.read_bytes() == VICTIM
    assert sorted(p.name for p in folder.path.iterdir()) == sorted([*before, ".lock"])


@pytest.mark.parametrize("resume", [False, True], ids=["run", "resume"])
def test_a_fifo_lock_is_refused_without_waiting(resume, config, tmp_path):
    out = tmp_path / "runs"
    folder = _folder(config, out)
    spec = load_experiment(config).runs()[0]
    folder.write_spec(spec)  # a started run: `run` looks for its writer, `--resume` runs it
    os.mkfifo(folder.lock_file)
    args = ["run", "--resume", "--out", str(out)] if resume else \
        ["run", "--config", str(config), "--out", str(out)]
    with deadline(60):
        result = cli.invoke(app, args)
    with deadline(10):
        assert folder.writer() is None
    _assert_refused(result, folder.lock_file)
    assert "FIFO" in result.stderr


def test_the_lock_refuses_a_link_a_fifo_a_folder_and_a_hard_link(tmp_path, victim):
    folder = RunDir(tmp_path / "run")
    folder.path.mkdir()
    makers = {"a symbolic link": lambda p: p.symlink_to(victim),
              "a FIFO": os.mkfifo,
              "a folder": os.mkdir,
              "a hard link to another file": lambda p: os.link(victim, p)}
    for kind, make in makers.items():
        make(folder.lock_file)
        with deadline(10), pytest.raises(RunDirectoryError) as info, folder.lock():
            pytest.fail("locked")
        with deadline(10), pytest.raises(RunDirectoryError) as checked:
            folder.check_not_busy()
        assert str(info.value) == str(checked.value)
        assert str(info.value).startswith(f"{folder.lock_file} is {kind}"), str(info.value)
        assert "delete it" in str(info.value)
        assert victim.read_bytes() == VICTIM
        if folder.lock_file.is_dir() and not folder.lock_file.is_symlink():
            folder.lock_file.rmdir()
        else:
            folder.lock_file.unlink()


# --- temporaries and replaced files ------------------------------------------------------------


def test_a_link_planted_at_a_temporary_name_is_never_followed(tmp_path, victim, monkeypatch):
    target = tmp_path / "run" / "config.toml"
    target.parent.mkdir()
    planted = target.with_name(".config.toml.planted.part")
    planted.symlink_to(victim)
    tags = iter(["planted", "fresh"])
    monkeypatch.setattr(adaptscope.files, "_temporary_tag", lambda: next(tags))

    atomic_write(target, lambda handle: handle.write(b"new"))
    assert target.read_bytes() == b"new" and not target.is_symlink()
    assert victim.read_bytes() == VICTIM
    assert planted.is_symlink()  # not adaptscope's: left alone here


def test_a_file_planted_as_a_link_is_replaced_not_written_through(tmp_path, victim):
    folder = RunDir(tmp_path / "run")
    folder.path.mkdir()
    done = folder.path / "DONE"
    done.symlink_to(victim)
    folder.mark_done("finished")
    assert not done.is_symlink() and done.read_text() == "finished\n"
    assert victim.read_bytes() == VICTIM


def test_job_json_planted_as_a_link_is_replaced_not_written_through(tmp_path, victim,
                                                                     source_checkpoint,
                                                                     monkeypatch):
    class Executor:  # submitit's SlurmExecutor, without a cluster
        def __init__(self, folder):
            pass

        def update_parameters(self, **params):
            pass

        def map_array(self, fn, specs, dirs):
            return [SimpleNamespace(job_id=f"7_{i}", paths=SimpleNamespace(
                stdout=Path(f"{i}.out"), stderr=Path(f"{i}.err"))) for i in range(len(specs))]

    monkeypatch.setattr(submitit, "SlurmExecutor", Executor)
    monkeypatch.setattr(slurm, "slurm_missing", lambda: None)
    monkeypatch.setattr(slurm, "folder_status", lambda out, states: [])
    spec = tiny_spec(source_checkpoint)
    out = tmp_path / "runs"
    folder = RunDir(out / spec.run_id)
    folder.path.mkdir(parents=True)
    folder.job_file.symlink_to(victim)

    assert slurm.submit([runner.PlannedRun(spec, folder.path)], ExecutorSpec(kind="slurm"),
                        out) == ["7_0"]
    assert not folder.job_file.is_symlink() and '"job_id": "7_0"' in folder.job_file.read_text()
    assert victim.read_bytes() == VICTIM


# --- checkpoints: a full disk, and what a killed save leaves -----------------------------------


def _disk_full_by_kernel(monkeypatch) -> None:
    """Every write to a new file goes to /dev/full, which fails as a full disk does."""
    real = os.fdopen

    def onto_dev_full(fd, *args, **kwargs):
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)
        os.close(full)
        return real(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", onto_dev_full)


def _disk_full_on_write(monkeypatch) -> None:
    """Every write to a new file raises ENOSPC, as Python reports a full disk."""
    real = os.fdopen

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, *args, **kwargs: Full(real(fd, *args, **kwargs)))


@pytest.mark.parametrize("fill", [_disk_full_by_kernel, _disk_full_on_write],
                         ids=["dev-full", "oserror"])
def test_a_full_disk_while_saving_a_checkpoint_names_the_file(fill, tmp_path, monkeypatch):
    if fill is _disk_full_by_kernel and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    from _tiny_world import CH

    from adaptscope.models import Discriminator, Generator

    g, d = Generator(16, 32, 2, channels=CH), Discriminator(16, channels=CH)
    path = tmp_path / "run" / "checkpoints" / "latest.pt"
    save_checkpoint(path, g_ema=g, g=g, d=d, iteration=2)
    before = path.read_bytes()
    with monkeypatch.context() as m:
        fill(m)
        with pytest.raises(CheckpointError) as info:
            save_checkpoint(path, g_ema=g, g=g, d=d, iteration=4)
    assert str(info.value).startswith(
        f"{path}: cannot write the checkpoint (No space left on device)"), str(info.value)
    assert path.read_bytes() == before  # the previous checkpoint is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest.pt"]  # no temporary left


@pytest.mark.parametrize("resume", [False, True], ids=["run", "resume"])
def test_a_killed_saves_temporary_is_removed_when_the_run_starts(resume, config, tmp_path):
    out = tmp_path / "runs"
    folder = _unfinished(config, out) if resume else _folder(config, out)
    stale = folder.checkpoint.parent / STALE_CHECKPOINT
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"PK\x03\x04 half a checkpoint")
    args = ["run", "--resume", "--out", str(out)] if resume else \
        ["run", "--config", str(config), "--out", str(out)]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert folder.is_done()
    assert sorted(p.name for p in folder.checkpoint.parent.iterdir()) == ["latest.pt"]


# --- a second writer -----------------------------------------------------------------------------




def test_a_refused_second_writer_prints_only_the_refusal(config, tmp_path):
    out = tmp_path / "runs"
    folder = _unfinished(config, out)
    holder = hold_lock(folder.path)
    try:
        result = cli.invoke(app, ["run", "--resume", "--out", str(out)])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert error_lines(result.stderr) == [
        f"error: {folder.path} is being written by process {holder.pid} on "
        f"{socket.gethostname()}; wait for it to finish or stop it"]
    assert result.stdout == ""  # no table of the other process's rows

