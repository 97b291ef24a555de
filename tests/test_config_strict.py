"""What a config may hold, checked when it is loaded: a run folder's config.toml whole and as its
trajectory recorded it, schedules and seeds in range, `--set` typos named as the option, finite
floats, and schedules recorded in a trajectory as their rule rather than their points."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _cli_checks import one_error
from _tiny_world import run_crashing_at, tiny_spec
from typer.testing import CliRunner

from adaptscope.cli import app
from adaptscope.errors import ConfigError
from adaptscope.spec import RunSpec, ScheduleSpec, TargetSpec
from adaptscope.track import rundir, schema
from adaptscope.track.store import append_rows, read_metadata
from adaptscope.train.experiment import check_run_configs, load_experiment

cli = CliRunner(env={"COLUMNS": "400"})


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("ADAPTSCOPE_DEBUG", raising=False)




@pytest.fixture
def nothing_starts(monkeypatch):
    """A run reaching the executor fails the test: the input should have been refused."""
    def execute(*args, **kwargs):
        raise AssertionError("a run was started")

    monkeypatch.setattr("adaptscope.train.runner.execute", execute)


# --- a run folder's config.toml on --resume ----------------------------------------------------


@pytest.fixture(scope="module")
def stopped_run(source_checkpoint, tmp_path_factory) -> Path:
    """A tiny run stopped after iteration 2 (rows 0 and 2), with train.r1_gamma = 0.01."""
    spec = tiny_spec(source_checkpoint)
    run_dir = tmp_path_factory.mktemp("stopped") / spec.run_id
    run_crashing_at(spec, run_dir, 2)
    return run_dir


@pytest.fixture
def run_dir(stopped_run, tmp_path) -> Path:
    copy = tmp_path / "runs" / stopped_run.name
    shutil.copytree(stopped_run, copy)
    return copy


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != rundir.LOCK_FILE}


def _resume(run_dir: Path):
    return cli.invoke(app, ["run", "--resume", "--out", str(run_dir.parent), "--workers", "1"])


def test_a_deleted_line_is_refused_not_taken_from_the_defaults(run_dir):
    config = run_dir / rundir.CONFIG_FILE
    text = config.read_text()
    assert "r1_gamma = 0.01\n" in text
    config.write_text(text.replace("r1_gamma = 0.01\n", ""))
    before = _snapshot(run_dir)
    message = one_error(_resume(run_dir))  # before: resumed with r1_gamma = 10.0
    assert message.startswith(f"error: {config}: missing setting(s) train.r1_gamma")
    assert "train.r1_gamma = 0.01" in message  # the recorded value, to restore
    assert _snapshot(run_dir) == before

    config.write_text(text)  # restored: the run continues
    result = _resume(run_dir)
    assert result.exit_code == 0, result.output
    assert read_metadata(run_dir)["config"]["train"]["r1_gamma"] == 0.01


def test_an_edited_value_is_refused(run_dir):
    config = run_dir / rundir.CONFIG_FILE
    config.write_text(config.read_text().replace("r1_gamma = 0.01\n", "r1_gamma = 10.0\n"))
    before = _snapshot(run_dir)
    message = one_error(_resume(run_dir))
    assert message.startswith(f"error: {config}: train.r1_gamma: 0.01 (recorded in "
                              "trajectory.parquet) vs 10.0 (in config.toml); the file was edited")
    assert _snapshot(run_dir) == before


def test_a_config_cut_in_half(run_dir):
    config = run_dir / rundir.CONFIG_FILE
    lines = config.read_text().splitlines(keepends=True)
    config.write_text("".join(lines[: lines.index("[metrics]\n")]))  # no [metrics] at all
    message = one_error(_resume(run_dir))  # before: the clean protocol, asking for Inception
    assert message.startswith(f"error: {config}: missing setting(s) metrics.")
    assert "inception" not in message.lower()

    config.write_text("".join(lines)[: len("".join(lines)) // 2] + '"unfinished')
    assert f"{config} is not valid TOML" in one_error(_resume(run_dir))


def test_a_run_started_by_a_version_without_a_setting(run_dir):
    """The recorded config lacks the key too: an older adaptscope wrote it, so filling in
    today's default would continue another run than the one recorded."""
    config, table = run_dir / rundir.CONFIG_FILE, run_dir / rundir.TRAJECTORY_FILE
    config.write_text(config.read_text().replace("flip = true\n", ""))
    data = pq.read_table(table)
    meta = dict(data.schema.metadata)
    recorded = read_metadata(run_dir)["config"]
    del recorded["train"]["flip"]
    import json

    meta[schema.META_CONFIG.encode()] = json.dumps(recorded).encode()
    meta[schema.META_VERSION.encode()] = b"0.0.9"
    pq.write_table(data.replace_schema_metadata(meta), table)
    message = one_error(_resume(run_dir))
    assert f"{config}: missing setting(s) train.flip" in message
    assert "adaptscope 0.0.9" in message and "another --out" in message


def test_a_folder_without_rows_is_checked_too(tmp_path, source_checkpoint):
    spec = tiny_spec(source_checkpoint)
    folder = rundir.RunDir(tmp_path / "runs" / spec.run_id)
    folder.path.mkdir(parents=True)
    folder.write_spec(spec)
    folder.config.write_text(folder.config.read_text().replace("mixing = 0.5\n", ""))
    message = one_error(_resume(folder.path))
    assert message.startswith(f"error: {folder.config}: missing setting(s) train.mixing")

    folder.mark_done("finished")  # never continued: read only to be kept, as before
    check_run_configs([folder.path])


# --- schedules and seeds -----------------------------------------------------------------------


def test_schedules_are_bounded():
    ScheduleSpec(iterations=10**9, eval_every=10**4, cheap_every=10**4)  # the largest allowed
    with pytest.raises(ConfigError, match=r"schedule.iterations <= 1,000,000,000"):
        ScheduleSpec(iterations=10**9 + 1, eval_every=10**5)
    with pytest.raises(ConfigError, match=r"at most 100,000 full evaluations.*eval_every >= 1000"):
        ScheduleSpec(iterations=10**8, eval_every=10)
    with pytest.raises(ConfigError, match=r"at most 100,000 cheap evaluations.*cheap_every >= 10"):
        ScheduleSpec(iterations=10**6, eval_every=1000, cheap_every=1)


def test_schedule_points_follow_the_rule():
    s = ScheduleSpec(iterations=10, eval_every=4, cheap_every=3)
    assert [i for i in range(11) if s.is_full(i)] == s.evaluation_points() == [0, 4, 8, 10]
    assert [i for i in range(11) if s.is_cheap(i)] == s.cheap_points() == [3, 6, 9]
    assert s.rule() == {"iterations": 10, "eval_every": 4, "cheap_every": 3}
    assert s.rule(cheap=False)["cheap_every"] == 0
    assert ScheduleSpec(iterations=10, eval_every=4, cheap_every=8).rule()["cheap_every"] == 0


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seeds_are_bounded(seed):
    with pytest.raises(ConfigError, match=rf"seed.* = {seed} is not allowed.*4294967296"):
        RunSpec(experiment="e", method="tgan", seed=seed)
    with pytest.raises(ConfigError, match=rf"target.shots_seed = {seed} is not allowed"):
        TargetSpec(shots_seed=seed)
    RunSpec(experiment="e", method="tgan", seed=2**32 - 1)


@pytest.mark.parametrize("args,message", [
    (["--iterations", "100000000", "--eval-every", "10"],
     "schedule.eval_every = 10 is not allowed: it needs at most 100,000 full evaluations"),
    (["--iterations", "1000000000000000"], "schedule.iterations <= 1,000,000,000"),
    (["--seeds", "-1"], "seeds = -1 is not allowed: it needs 0 <= seed < 4294967296"),
    (["--seeds", "0,4294967296"], "seeds = 4294967296 is not allowed"),
    (["--set", "train.lr=inf"], "--set train.lr=inf: 'inf' is not a finite number"),
])
def test_absurd_values_are_refused_at_load(args, message, tmp_path, nothing_starts):
    out = tmp_path / "runs"
    result = cli.invoke(app, ["run", "--methods", "tgan", *args, "--out", str(out)])
    assert message in one_error(result)
    assert not out.exists()


# --- the schedule in a trajectory's metadata ---------------------------------------------------


def _row(iteration: int) -> dict:
    return {"run_id": "r0", "method": "tgan", "source": "s", "target": "t", "shots": 10,
            "seed": 0, "iteration": iteration, "images_seen": iteration * 4}


def _points_protocol(schedule: ScheduleSpec) -> dict:
    """A protocol as every table before the schedule's rule held it."""
    return {"fid_backbone": "toy", "evaluation_iterations": schedule.evaluation_points(),
            "cheap_evaluation_iterations": schedule.cheap_points()}


def test_an_older_table_holding_points_is_read_and_continued(tmp_path):
    schedule = ScheduleSpec(iterations=6, eval_every=3, cheap_every=2)
    config = {"schedule": {"iterations": 6, "eval_every": 3, "cheap_every": 2}}
    append_rows(tmp_path, [_row(0)], config=config, protocol={"fid_backbone": "toy"})
    table = tmp_path / rundir.TRAJECTORY_FILE
    data = pq.read_table(table)  # rewritten as an older adaptscope wrote it: with the points
    import json

    meta = {**data.schema.metadata,
            schema.META_PROTOCOL.encode(): json.dumps(_points_protocol(schedule)).encode()}
    pq.write_table(data.replace_schema_metadata(meta), table)
    assert read_metadata(tmp_path)["protocol"]["evaluation_iterations"] == [0, 3, 6]

    today = {"fid_backbone": "toy", "schedule": schedule.rule()}  # as the tracker writes it
    append_rows(tmp_path, [_row(2)], config=config, protocol=today)
    assert read_metadata(tmp_path)["protocol"] == today
    other = ScheduleSpec(iterations=6, eval_every=2)
    with pytest.raises(Exception, match="evaluation protocol differs"):
        append_rows(tmp_path, [_row(4)], config={"schedule": {"iterations": 6, "eval_every": 2,
                                                                "cheap_every": 0}},
                    protocol={"fid_backbone": "toy", "schedule": other.rule()})


# --- --set: typos named as the option, floats finite -------------------------------------------


def test_a_set_typo_names_the_option_and_the_closest_key(tmp_path, nothing_starts):
    out = tmp_path / "runs"
    message = one_error(cli.invoke(app, ["run", "--set", "train.lrr=0.1", "--out", str(out)]))
    assert message.startswith("error: --set train.lrr=0.1: unknown setting(s) ['lrr']")
    assert "did you mean train.lr?" in message
    assert "embedded-default.toml" not in message  # before: blamed on the packaged config
    assert not out.exists()


@pytest.mark.parametrize("override,expected", [
    ("dcl.tauu=0.1", "--set dcl.tauu=0.1: unknown setting(s) ['tauu'] (did you mean dcl.tau?)"),
    ("trainn.lr=0.1", "--set trainn.lr=0.1: unknown setting(s) ['trainn'] "
                      "(did you mean train.lr?)"),
    ("train.lr=fast", "--set train.lr=fast: expected float, got 'fast'"),
])
def test_set_errors_name_the_option(override, expected):
    with pytest.raises(ConfigError) as info:
        load_experiment(None, [override])
    assert str(info.value).startswith(expected)


def test_a_typo_in_a_file_names_the_file_and_the_closest_key(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text("[train]\nlrr = 0.1\n")
    with pytest.raises(ConfigError, match=r"exp.toml.train: unknown setting\(s\) \['lrr'\] "
                                          r"\(did you mean 'lr'\?\)"):
        load_experiment(path)


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e999", "Infinity"])
def test_non_finite_floats_are_refused_from_the_command_line(text):
    with pytest.raises(ConfigError, match=rf"--set train.lr={text}: .* is not a finite number"):
        load_experiment(None, [f"train.lr={text}"])
    with pytest.raises(ConfigError, match=rf"--set dcl.tau={text}: .* is not a finite number"):
        load_experiment(None, ['methods=["dcl"]', f"dcl.tau={text}"])


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1" + "0" * 400])
def test_non_finite_floats_are_refused_from_a_file(value, tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text(f"[train]\nlr = {value}\n")
    with pytest.raises(ConfigError, match=r"exp.toml.train.lr: .* (is not a finite number|"
                                          r"too large)"):
        load_experiment(path)
