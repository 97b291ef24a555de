"""The command line: help, methods, and one clear error for each kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from adaptscope.cli import app
from adaptscope.config import ConfigError, dumps_toml, read_toml
from adaptscope.train.experiment import load_experiment

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "plot", "report", "methods", "data", "pretrain", "realism"):
        assert command in result.output


def test_methods_lists_every_builtin_method_with_settings():
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0
    for name in ("tgan", "freezed", "ewc", "cdc", "dcl"):
        assert f"\n{name} " in "\n" + result.output
    assert "dcl.tau = 0.07" in result.output and "cdc.kl_weight = 1000.0" in result.output


@pytest.mark.parametrize("args,message", [
    (["--methods", "tgan,nope"], "unknown method 'nope'"),
    (["--set", "schedule.iters=5"], "unknown setting(s) ['iters']"),
    (["--set", "dcl.temperature=0.1"], "unknown setting(s) ['temperature']"),
    (["--iterations", "-1"], "iterations >= 0"),
    (["--target", "no/such/folder"], "target data no/such/folder does not exist"),
])
def test_bad_run_input_gets_one_clear_error(args, message, tmp_path):
    result = runner.invoke(app, ["run", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not list(tmp_path.iterdir())  # nothing was started


def test_gpu_config_names_the_missing_checkpoint(tmp_path):
    result = runner.invoke(app, ["run", "--config", str(EXPERIMENTS / "ffhq-babies.toml"),
                                 "--out", str(tmp_path)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "checkpoints/550000.pt does not exist" in text and "source.checkpoint" in text


@pytest.mark.parametrize("name", ["embedded-default", "ffhq-babies", "ffhq-sunglasses",
                                  "ffhq-sketches", "ffhq-afhq-cat"])
def test_shipped_experiment_configs_parse(name):
    cfg = load_experiment(EXPERIMENTS / f"{name}.toml")
    assert cfg.runs() and cfg.target.shots == 10
    if name.startswith("ffhq"):
        assert (cfg.schedule.iterations, cfg.schedule.eval_every) == (3000, 500)
        assert cfg.metrics.fid_n_gen == 5000 and cfg.metrics.lpips_backbone == "vgg"


def test_the_all_methods_study_is_the_embedded_default_with_every_method():
    from adaptscope.methods import BUILTIN_METHODS

    study = load_experiment(EXPERIMENTS / "all-methods.toml")
    gan_methods = [cls.name for cls in BUILTIN_METHODS if cls.family == "gan"]
    assert study.methods == gan_methods and study.seeds == [0, 1, 2]
    every = ",".join(f'"{m}"' for m in study.methods)
    default = load_experiment(None, [f"methods=[{every}]", "seeds=[0, 1, 2]"])
    # the same runs, settings and run ids: a shared folder keeps the embedded default's runs
    assert [s.to_dict() for s in study.runs()] == [s.to_dict() for s in default.runs()]


def test_bare_command_config_is_the_embedded_default():
    cfg = load_experiment(None)
    assert cfg.methods == ["tgan", "freezed", "cdc", "dcl"]
    assert cfg.target.data == "toyfaces:sunglasses" and cfg.metrics.fid_backbone == "toy"
    assert len(cfg.schedule.evaluation_points()) >= 7


def test_config_round_trips_through_toml(tmp_path):
    cfg = load_experiment(None, ["dcl.tau=0.2", "seeds=[0, 1]"])
    assert cfg.method_params["dcl"]["tau"] == 0.2
    spec = cfg.runs()[-1]
    path = tmp_path / "run.toml"
    path.write_text(dumps_toml(spec.to_dict()))
    from adaptscope.spec import spec_from_dict

    assert spec_from_dict(read_toml(path)) == spec


def test_wrong_types_are_refused():
    with pytest.raises(ConfigError, match="expected int"):
        load_experiment(None, ['schedule.iterations="many"'])
