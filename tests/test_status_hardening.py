"""`adaptscope status` on folders it cannot trust: one damaged run folder is shown as `damaged`
with the reason while the others are still listed, and a job's log is read only from the jobs'
log folder inside --out (never a file a planted `job.json` or symlink points to elsewhere)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from _tiny_world import tiny_spec
from _trajectory_fixtures import make_run
from typer.testing import CliRunner

from adaptscope.cli import app
from adaptscope.track.rundir import RunDir
from adaptscope.track.status import STATES, folder_status

runner = CliRunner()
SECRET = "SECRET-7f3a9c-not-a-log"


def started(out: Path, name: str) -> RunDir:
    """A run folder with a valid config, as `adaptscope run` writes it before training."""
    folder = RunDir(out / name)
    folder.path.mkdir(parents=True)
    folder.write_spec(tiny_spec(out / "tiny.pt"))
    return folder


def cli_status(out: Path) -> str:
    """`adaptscope status out`'s output, with the lines rich wrapped at 80 columns rejoined."""
    result = runner.invoke(app, ["status", str(out)])
    assert result.exit_code == 0, result.output
    return result.output + "\n" + result.output.replace("\n", "")


def by_id(out: Path) -> dict:
    return {s.run_id: s for s in folder_status(out)}


# --- a damaged config.toml ----------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["unparsable", "cut", "binary", "not-a-run-config"])
def test_a_damaged_config_is_listed_as_damaged_and_the_other_runs_still_are(tmp_path, damage):
    out = tmp_path / "runs"
    good = started(out, "good")
    bad = started(out, "bad")
    text = good.config.read_bytes()
    bad.config.write_bytes({"unparsable": b"method = \"tgan\"\n[schedule\niterations = 4\n",
                            "cut": text[: len(text) // 2] + b"\n[",
                            "binary": bytes(range(256)) * 4,
                            "not-a-run-config": b"answer = 42\n"}[damage])
    states = by_id(out)
    assert states["good"].state == "unfinished" and states["good"].method == "tgan"
    assert states["bad"].state == "damaged"
    assert "config.toml" in states["bad"].detail
    output = cli_status(out)
    assert "good" in output and "1 damaged" in output and "1 unfinished" in output
    assert "bad damaged:" in output and "config.toml" in output


# --- a damaged trajectory.parquet ---------------------------------------------------------------


@pytest.mark.parametrize("damage", ["cut", "garbage"])
@pytest.mark.parametrize("done", [False, True])
def test_a_damaged_trajectory_is_damaged_not_unfinished(tmp_path, damage, done):
    out = tmp_path / "runs"
    run = RunDir(make_run(out, "tgan", 0, iterations=(0, 2, 4), samples=False))
    run.write_spec(tiny_spec(out / "tiny.pt"))
    started(out, "good")
    data = run.trajectory.read_bytes()
    run.trajectory.write_bytes(data[: len(data) // 2] if damage == "cut" else b"PAR1" * 64)
    if done:
        run.mark_done("finished")
    status = by_id(out)[run.path.name]
    assert status.state == "damaged", (status.state, status.detail)
    assert "trajectory.parquet" in status.detail
    output = cli_status(out)
    assert "1 damaged" in output and f"{run.path.name} damaged:" in output
    assert "1 unfinished" in output  # the good run


def test_damaged_is_a_state():
    assert "damaged" in STATES


# --- the log tail of a failed run ----------------------------------------------------------------


@pytest.mark.parametrize("record", [b"[1, 2]", b'"77_0"', b'{"job_id": 7, "stderr": 5}'])
def test_a_job_json_that_is_not_a_job_record_does_not_stop_status(tmp_path, record):
    out = tmp_path / "runs"
    started(out, "good")
    odd = started(out, "odd")
    odd.mark_failed("RuntimeError: boom")
    odd.job_file.write_bytes(record)
    states = by_id(out)
    assert states["good"].state == "unfinished" and states["odd"].state == "failed"
    assert "1 failed" in cli_status(out)


def failed_run(out: Path, name: str, stderr: str, started_run: bool = True) -> RunDir:
    """A run whose job failed; its `job.json` names `stderr` as the job's log."""
    folder = started(out, name) if started_run else RunDir(out / name)
    folder.path.mkdir(parents=True, exist_ok=True)
    if started_run:
        folder.mark_failed("RuntimeError: boom")
    folder.job_file.write_text(json.dumps({"job_id": "77_0", "stdout": stderr,
                                           "stderr": stderr}))
    return folder


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "private" / "secret.txt"
    path.parent.mkdir()
    path.write_text(f"line one\n{SECRET}\n")
    return path


def assert_not_shown(out: Path) -> None:
    for status in folder_status(out):
        assert SECRET not in status.detail, status.detail
    assert SECRET not in cli_status(out)


@pytest.mark.parametrize("started_run", [True, False])
def test_a_job_json_naming_a_file_outside_the_log_folder_is_not_read(tmp_path, secret,
                                                                     started_run):
    out = tmp_path / "runs"
    failed_run(out, "planted", str(secret), started_run)
    assert by_id(out)["planted"].state == "failed"
    assert_not_shown(out)


def test_a_path_that_climbs_out_of_the_log_folder_is_not_read(tmp_path, secret):
    out = tmp_path / "runs"
    (out / "slurm-logs").mkdir(parents=True)
    failed_run(out, "planted", str(out / "slurm-logs" / ".." / ".." / "private" / "secret.txt"))
    assert_not_shown(out)


def test_a_symlink_in_the_log_folder_to_a_file_outside_is_not_read(tmp_path, secret):
    out = tmp_path / "runs"
    link = out / "slurm-logs" / "77_0" / "77_0_0_log.err"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    failed_run(out, "planted", str(link))
    assert_not_shown(out)


def test_a_log_folder_setting_outside_out_is_not_trusted(tmp_path, secret):
    out = tmp_path / "runs"
    out.mkdir()
    (out / "executor.toml").write_text('kind = "slurm"\nlog_folder = "../private"\n')
    failed_run(out, "planted", str(secret))
    assert_not_shown(out)


def test_a_fifo_in_the_log_folder_is_not_opened(tmp_path):
    out = tmp_path / "runs"
    fifo = out / "slurm-logs" / "77_0" / "77_0_0_log.err"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    failed_run(out, "planted", str(fifo))
    result: list = []
    reader = threading.Thread(target=lambda: result.append(folder_status(out)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # blocked opening the FIFO: let it go, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=10)
    assert result and not reader.is_alive(), "status blocked on a FIFO named as a log"
    assert result[0][0].state == "failed"


def test_the_log_tail_of_a_job_in_the_log_folder_is_shown_and_bounded(tmp_path):
    out = tmp_path / "runs"
    log = out / "slurm-logs" / "77_0" / "77_0_0_log.err"
    log.parent.mkdir(parents=True)
    log.write_text("x" * 2**20 + "\nTraceback ...\nRuntimeError: CUDA oom\n")  # one 1 MiB line
    failed_run(out, "real", str(log))
    detail = by_id(out)["real"].detail
    assert "RuntimeError: CUDA oom" in detail and "end of" in detail
    assert len(detail) < 100_000
    assert "CUDA oom" in cli_status(out)


def test_a_failed_file_that_is_not_text_is_still_a_failed_run(tmp_path):
    out = tmp_path / "runs"
    started(out, "good")
    odd = started(out, "odd")
    odd.failed_file.write_bytes(b"\xff\xfe\x00 not text")
    states = by_id(out)
    assert states["good"].state == "unfinished" and states["odd"].state == "failed"
    assert "FAILED" in states["odd"].detail


def test_a_run_folder_that_cannot_be_read_is_damaged(tmp_path, monkeypatch):
    """E.g. another user's run folder without read permission (root reads any, so faked)."""
    out = tmp_path / "runs"
    started(out, "good")
    started(out, "private")
    read_spec = RunDir.read_spec

    def refuse(self):
        if self.path.name == "private":
            raise PermissionError(13, "Permission denied", str(self.config))
        return read_spec(self)

    monkeypatch.setattr(RunDir, "read_spec", refuse)
    states = by_id(out)
    assert states["good"].state == "unfinished" and states["private"].state == "damaged"
    assert "Permission denied" in states["private"].detail
    output = cli_status(out)
    assert "private damaged:" in output and "Permission denied" in output
