"""Every user error is one `error:` line on stderr, without a traceback, naming what to do.

Bad files (a TOML that is not UTF-8 or not TOML, a run folder's damaged config, a text file named
.pt), unwritable output folders, a full disk, a damaged checkpoint or trajectory (with the way
back checked on a tiny run), empty option lists, and text that rich must print as it is.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pandas as pd
import pytest
from _cli_checks import one_error
from _tiny_world import metric_rows, tiny_spec
from _trajectory_fixtures import make_run
from typer.testing import CliRunner

import adaptscope.track.tracker as tracker_module
from adaptscope.cli import app
from adaptscope.config import dumps_toml, read_toml
from adaptscope.errors import EXIT_RUN_FAILED, ConfigError, DataError
from adaptscope.spec import spec_from_dict
from adaptscope.track import rundir, store
from adaptscope.track.store import (
    TrajectoryError,
    append_rows,
    load_trajectories,
    recorded_iterations,
)
from adaptscope.train.loop import run_adaptation

cli = CliRunner(env={"COLUMNS": "400"})  # no wrapping inside the messages checked
PREV = rundir.TRAJECTORY_FILE + ".prev"


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("ADAPTSCOPE_DEBUG", raising=False)




def tiny_args(source: Path, *more: str) -> list[str]:
    """`adaptscope run` on the tiny source with the embedded default's other settings, small."""
    return ["run", "--methods", "tgan", "--set", f"source.checkpoint={source}",
            "--set", "metrics.fid_n_gen=24", "--set", "metrics.lpips_n_samples=20",
            "--set", "metrics.n_grid=4", "--set", "metrics.batch_size=12", "--workers", "1",
            *more]


# --- config files --------------------------------------------------------------------------------


def test_a_toml_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))
    result = cli.invoke(app, ["run", "--config", str(path), "--out", str(tmp_path / "o")])
    message = one_error(result)
    assert str(path) in message and "is not UTF-8 text (byte 0xe9" in message
    assert not (tmp_path / "o").exists()


def test_a_toml_file_with_a_syntax_error(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('name = "x"\n[schedule\niterations = 3\n')
    result = cli.invoke(app, ["run", "--config", str(path), "--out", str(tmp_path / "o")])
    message = one_error(result)
    assert f"{path} is not valid TOML" in message and "line 2" in message


@pytest.mark.parametrize("field", ["experiment", "method", "seed"])
def test_a_run_folder_config_missing_a_required_field(field, tmp_path):
    spec = tiny_spec(Path("tiny.pt"))
    data = spec.to_dict()
    del data[field]
    config = tmp_path / "runs" / spec.run_id / rundir.CONFIG_FILE
    config.parent.mkdir(parents=True)
    config.write_text(dumps_toml(data))
    with pytest.raises(ConfigError, match=rf"missing required setting\(s\) \['{field}'\]"):
        spec_from_dict(data)  # before: TypeError from the dataclass constructor
    result = cli.invoke(app, ["run", "--resume", "--out", str(tmp_path / "runs")])
    assert one_error(result) == (
        f"error: {config}: missing required setting(s) ['{field}']")


def test_out_pointing_at_a_file(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    result = cli.invoke(app, ["run", "--out", str(tmp_path / "runs")])
    assert f"--out {tmp_path / 'runs'} is a file, not a folder" in one_error(result)


@pytest.mark.parametrize("option", ["--methods", "--seeds"])
def test_an_empty_list_option_is_named(option, tmp_path):
    result = cli.invoke(app, ["run", option, ",", "--out", str(tmp_path / "o")])
    assert one_error(result).startswith(f"error: {option} ',' names nothing")
    assert not (tmp_path / "o").exists()


def test_a_text_file_named_pt_is_not_a_checkpoint(tmp_path):
    notes = tmp_path / "notes.pt"
    notes.write_text("trained for 3 days, see the wiki\n")
    result = cli.invoke(app, ["run", "--set", f"source.checkpoint={notes}",
                              "--out", str(tmp_path / "o")])
    message = one_error(result)
    assert f"{notes} is not a PyTorch checkpoint" in message and "unpickling" not in message
    pointer = tmp_path / "lfs.pt"  # before: "needs arbitrary unpickling to load"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    result = cli.invoke(app, ["run", "--set", f"source.checkpoint={pointer}",
                              "--out", str(tmp_path / "o")])
    message = one_error(result)
    assert "Git LFS pointer" in message and "unpickling" not in message
    assert not (tmp_path / "o").exists()


def test_a_folder_named_like_a_date_stays_a_string(source_checkpoint, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "2024-01-01"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (16, 16), (20 * i, 100, 200)).save(folder / f"{i}.png")
    result = cli.invoke(app, tiny_args(source_checkpoint, "--set", "target.data=2024-01-01",
                                       "--protocol", "embedded",
                                       "--iterations", "0", "--eval-every", "1",
                                       "--out", "runs"))
    assert result.exit_code == 0, result.output
    [config] = (tmp_path / "runs").glob("*/config.toml")
    assert read_toml(config)["target"]["data"] == "2024-01-01"
    assert "2024-01-01" in config.parent.name


# --- folders that cannot be written ------------------------------------------------------------


def _commands(source: Path, tmp_path: Path, out: Path) -> dict[str, list[str]]:
    runs = tmp_path / "recorded"
    make_run(runs, "tgan", 0, iterations=(0, 500))
    return {
        "run": tiny_args(source, "--out", str(out)),
        "plot": ["plot", str(runs), "--out", str(out)],
        "report": ["report", str(runs), "--out", str(out)],
        "data toyfaces": ["data", "toyfaces", "--domain", "sunglasses", "--count", "2",
                          "--out", str(out)],
    }


@pytest.mark.parametrize("command", ["run", "plot", "report", "data toyfaces"])
def test_an_output_inside_a_file_is_one_line(command, source_checkpoint, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder was expected")
    out = blocker / "out"
    result = cli.invoke(app, _commands(source_checkpoint, tmp_path, out)[command])
    message = one_error(result)
    assert "blocker" in message and os.strerror(errno.ENOTDIR) in message


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
@pytest.mark.parametrize("command", ["run", "plot", "report", "data toyfaces"])
def test_a_read_only_folder_is_one_line(command, source_checkpoint, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = cli.invoke(app, _commands(source_checkpoint, tmp_path, locked / "out")[command])
    finally:
        locked.chmod(0o755)
    message = one_error(result)
    assert str(locked) in message and os.strerror(errno.EACCES) in message


def test_a_permission_error_names_the_path(source_checkpoint, tmp_path, monkeypatch):
    """Simulated (root ignores permissions): `run` into a folder it may not write, and a
    command whose write is refused."""
    out = tmp_path / "runs"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False
                        if Path(path) == out and mode & os.W_OK
                        else real_access(path, mode, **kw))
    result = cli.invoke(app, tiny_args(source_checkpoint, "--out", str(out)))
    assert one_error(result) == f"error: {out}: {os.strerror(errno.EACCES)}"
    assert not list(out.iterdir())

    def refused(domain, count, size, target, start=0):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(Path(target) / "0.png"))

    monkeypatch.setattr("adaptscope.embedded.toyfaces.write_domain", refused)
    result = cli.invoke(app, ["data", "toyfaces", "--domain", "babies", "--count", "1",
                              "--out", str(tmp_path / "ro")])
    assert one_error(result) == (
        f"error: {tmp_path / 'ro' / '0.png'}: {os.strerror(errno.EACCES)}")


# --- the trajectory store: a full disk, the previous version, a damaged table -----------------

PROTOCOL = {"fid_backbone": "toy"}


def row(iteration: int) -> dict:
    return {"run_id": "r0", "method": "tgan", "source": "s", "target": "t", "shots": 10,
            "seed": 0, "iteration": iteration, "images_seen": iteration * 4,
            "fid": 100.0 - iteration / 100}


def test_a_full_disk_while_appending_names_the_file_and_keeps_the_rows(tmp_path, monkeypatch):
    run_dir = tmp_path / "r0"
    run_dir.mkdir()
    for it in (0, 500):
        append_rows(run_dir, [row(it)], config={}, protocol=PROTOCOL)
    table = run_dir / rundir.TRAJECTORY_FILE
    before = table.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(store.pq, "write_table", disk_full)
        with pytest.raises(TrajectoryError) as info:
            append_rows(run_dir, [row(1000)], config={}, protocol=PROTOCOL)
    message = str(info.value)
    assert message.startswith(f"{table}: cannot write the trajectory (No space left on device)")
    assert "the 2 row(s) recorded before are intact" in message and "--resume" in message
    assert table.read_bytes() == before
    assert recorded_iterations(run_dir) == {0, 500}
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".part")]


def test_every_append_keeps_the_previous_version_beside_it(tmp_path, monkeypatch):
    run_dir = tmp_path / "r0"
    run_dir.mkdir()
    table, prev = run_dir / rundir.TRAJECTORY_FILE, run_dir / PREV
    append_rows(run_dir, [row(0)], config={}, protocol=PROTOCOL)
    assert not prev.exists()  # nothing to keep yet
    for it in (500, 1000):
        before = table.read_bytes()
        append_rows(run_dir, [row(it)], config={}, protocol=PROTOCOL)
        assert prev.read_bytes() == before
    assert load_trajectories(prev)["iteration"].tolist() == [0, 500]
    assert load_trajectories(run_dir)["iteration"].tolist() == [0, 500, 1000]  # not the .prev
    with monkeypatch.context() as m:  # no hard links here: a copy
        m.setattr(store.os, "link", lambda *a: (_ for _ in ()).throw(OSError(errno.EPERM, "no")))
        before = table.read_bytes()
        append_rows(run_dir, [row(1500)], config={}, protocol=PROTOCOL)
    assert prev.read_bytes() == before
    assert sorted(p.name for p in run_dir.iterdir()) == [rundir.TRAJECTORY_FILE, PREV]


def test_a_damaged_table_is_named_with_its_previous_version(tmp_path):
    run_dir = tmp_path / "r0"
    run_dir.mkdir()
    table = run_dir / rundir.TRAJECTORY_FILE
    append_rows(run_dir, [row(0)], config={}, protocol=PROTOCOL)
    table.write_bytes(table.read_bytes()[:100])
    with pytest.raises(TrajectoryError, match="is unreadable") as info:
        load_trajectories(run_dir)
    assert ".prev" not in str(info.value)  # there is no previous version to offer
    table.unlink()
    for it in (0, 500):
        append_rows(run_dir, [row(it)], config={}, protocol=PROTOCOL)
    table.write_bytes(table.read_bytes()[:-40])
    with pytest.raises(TrajectoryError) as info:
        recorded_iterations(run_dir)
    message = str(info.value)
    assert message.startswith(f"{table} is unreadable")
    assert f"{PREV} beside it holds the previous version" in message
    assert "rename it to trajectory.parquet" in message and "--resume" in message


# --- a damaged run folder, and the way back that the messages give -----------------------------


class _Killed(Exception):
    """Stands for the process dying after the row of iteration 2 was recorded."""


@pytest.fixture(scope="module")
def uninterrupted(source_checkpoint, tmp_path_factory) -> pd.DataFrame:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    return metric_rows(run_adaptation(tiny_spec(source_checkpoint), run_dir))


def interrupted_run(source: Path, out: Path, monkeypatch) -> Path:
    """A tiny run (rows at 0, 2, 4) stopped before its row of iteration 4: rows 0 and 2, the
    checkpoint of iteration 2, `trajectory.parquet.prev` with row 0."""
    spec = tiny_spec(source)
    real = tracker_module.append_rows

    def append_then_die(run_dir, rows, **kwargs):
        if rows[0]["iteration"] == 4:
            raise _Killed
        return real(run_dir, rows, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(tracker_module, "append_rows", append_then_die)
        with pytest.raises(_Killed):
            run_adaptation(spec, out / spec.run_id)
    return out / spec.run_id


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != rundir.LOCK_FILE}


def test_a_damaged_checkpoint_and_the_way_back(source_checkpoint, uninterrupted, tmp_path,
                                              monkeypatch):
    out = tmp_path / "runs"
    run_dir = interrupted_run(source_checkpoint, out, monkeypatch)
    checkpoint = run_dir / rundir.CHECKPOINT_FILE
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    before = _snapshot(run_dir)

    resume = ["run", "--resume", "--out", str(out), "--workers", "1"]
    message = one_error(cli.invoke(app, resume))
    assert message.startswith(f"error: {checkpoint} is damaged (")
    assert "delete it and run `adaptscope run --resume --out" in message
    assert "starts again from iteration 0" in message and "same rows" in message
    assert _snapshot(run_dir) == before  # nothing was written

    checkpoint.unlink()  # what the message says to do
    result = cli.invoke(app, resume)
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(metric_rows(run_dir), uninterrupted)


def test_a_full_disk_in_a_run_then_resume(source_checkpoint, uninterrupted, tmp_path,
                                         monkeypatch):
    spec = tiny_spec(source_checkpoint)
    data = {k: v for k, v in spec.to_dict().items()
            if k not in ("experiment", "method", "seed", "method_params")}
    config = tmp_path / "tiny.toml"
    config.write_text(dumps_toml({**data, "name": spec.experiment, "methods": [spec.method],
                                  "seeds": [spec.seed], "workers": 1}))
    out = tmp_path / "runs"
    real = store.pq.write_table

    def full_at_the_third_row(table, where, **kwargs):
        if table.num_rows == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(table, where, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(store.pq, "write_table", full_at_the_third_row)
        result = cli.invoke(app, ["run", "--config", str(config), "--out", str(out)])
    assert result.exit_code == EXIT_RUN_FAILED
    table = out / spec.run_id / rundir.TRAJECTORY_FILE
    assert (f"{table}: cannot write the trajectory (No space left on device); the 2 row(s) "
            "recorded before are intact") in " ".join(result.stdout.split())
    assert recorded_iterations(table.parent) == {0, 2}

    result = cli.invoke(app, ["run", "--resume", "--out", str(out)])  # room made again
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(metric_rows(table.parent), uninterrupted)


def test_a_damaged_checkpoint_met_inside_a_run_gives_the_same_advice(source_checkpoint,
                                                                     tmp_path, monkeypatch):
    """Without the preflight (the library, a worker), the loop says the same."""
    from adaptscope.errors import CheckpointError

    run_dir = interrupted_run(source_checkpoint, tmp_path / "runs", monkeypatch)
    checkpoint = run_dir / rundir.CHECKPOINT_FILE
    checkpoint.write_bytes(b"PK\x03\x04 and then nothing")
    with pytest.raises(CheckpointError, match="is damaged .* starts again from iteration 0"):
        run_adaptation(tiny_spec(source_checkpoint), run_dir)


def test_a_truncated_table_and_the_way_back(source_checkpoint, uninterrupted, tmp_path,
                                           monkeypatch):
    out = tmp_path / "runs"
    run_dir = interrupted_run(source_checkpoint, out, monkeypatch)
    table, prev = run_dir / rundir.TRAJECTORY_FILE, run_dir / PREV
    assert load_trajectories(prev)["iteration"].tolist() == [0]
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    before = _snapshot(run_dir)

    resume = ["run", "--resume", "--out", str(out), "--workers", "1"]
    message = one_error(cli.invoke(app, resume))
    assert message.startswith(f"error: {table} is unreadable")
    assert f"{PREV} beside it holds the previous version" in message
    assert _snapshot(run_dir) == before

    os.replace(prev, table)  # what the message says to do
    result = cli.invoke(app, resume)
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(metric_rows(run_dir), uninterrupted)


# --- text reaches the terminal as it is ------------------------------------------------------


def test_a_failed_runs_message_keeps_brackets_and_colons(source_checkpoint, tmp_path,
                                                        monkeypatch):
    text = "data/[b]faces/toyfaces:sunglasses: has [red]no[/red] images"

    def failing(spec, run_dir, on_event=None):
        raise DataError(text)

    monkeypatch.setattr("adaptscope.train.loop.run_adaptation", failing)
    result = cli.invoke(app, tiny_args(source_checkpoint, "--out", str(tmp_path / "runs")))
    assert result.exit_code == EXIT_RUN_FAILED
    assert f"failed: DataError: {text}" in " ".join(result.stdout.split())


def test_paths_with_brackets_and_colons_are_printed_as_they_are(tmp_path):
    odd = tmp_path / "[b]runs:sunglasses:"
    odd.mkdir()
    result = cli.invoke(app, ["run", "--resume", "--out", str(odd)])
    assert result.exit_code == 0
    assert f"nothing to resume under {odd}" in " ".join(result.stdout.split())
    target = "data/[b]x/toyfaces:sunglasses:"
    message = one_error(cli.invoke(app, ["run", "--methods", "tgan", "--target", target,
                                         "--out", str(tmp_path / "o")]))
    assert message.startswith(f"error: target data {target} does not exist")
