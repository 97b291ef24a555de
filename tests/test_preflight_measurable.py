"""What a target can be measured with is known before anything is written.

An image folder is measured with real networks unless asked otherwise (`metrics.protocol =
"auto"`), a target too small for a metric of the protocol is refused naming the metric, its need
and the fix, and `adaptscope track` checks all of it before it creates its run folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _cli_checks import one_error, write_pngs
from _tiny_world import tiny_spec
from typer.testing import CliRunner

from adaptscope import load_trajectories
from adaptscope.cli import app
from adaptscope.config import dumps_toml
from adaptscope.errors import DataError
from adaptscope.spec import MetricsSpec, TargetSpec
from adaptscope.track.evaluate import DC_K, PR_K, set_size_problems
from adaptscope.train import preflight
from adaptscope.train.experiment import load_experiment

cli = CliRunner(env={"COLUMNS": "400"})
TINY_METRICS = ["--set", "metrics.fid_n_gen=24", "--set", "metrics.lpips_n_samples=20",
                "--set", "metrics.n_grid=4", "--set", "metrics.batch_size=12"]






# --- the protocol follows the target ------------------------------------------------------------


def test_a_folder_is_measured_with_the_clean_protocol_and_toyfaces_with_the_embedded_one():
    folder = load_experiment(None, ["target.data=data/my-folder"]).metrics
    assert (folder.protocol, folder.fid_backbone, folder.lpips_backbone) == (
        "clean", "inception", "vgg")
    assert folder.fid_n_gen == 5000
    toy = load_experiment(None).metrics
    assert (toy.protocol, toy.fid_backbone, toy.lpips_backbone, toy.cheap_n_samples) == (
        "embedded", "toy", "toy", 50)
    asked = load_experiment(None, ["target.data=data/my-folder", "metrics.protocol=embedded"])
    assert asked.metrics.protocol == "embedded"  # asked for by name, it is what runs
    assert MetricsSpec().protocol == "auto"


def test_offline_a_folder_without_inception_weights_names_the_file_and_the_quick_look(
        source_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTSCOPE_OFFLINE", "1")
    monkeypatch.setenv("ADAPTSCOPE_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    folder = write_pngs(tmp_path / "faces", 12)
    out = tmp_path / "runs"
    result = cli.invoke(app, ["run", "--methods", "tgan", "--target", str(folder), "--set",
                              f"source.checkpoint={source_checkpoint}", "--out", str(out)])
    message = one_error(result)
    assert "inception-2015-12-05.pt" in message and "--protocol embedded" in message
    assert not out.exists()


# --- every metric states the smallest sets it is defined on ------------------------------------


@pytest.mark.parametrize("n_real,metric", [
    (1, "density and coverage"), (2, "density and coverage"), (PR_K + 1, "density and coverage"),
    (DC_K, "density and coverage"),
])
def test_the_largest_unmet_need_is_named(n_real, metric):
    [problem] = set_size_problems(MetricsSpec(fid_n_gen=100), n_real, 10)
    assert problem.startswith(f"{metric} (k = {DC_K} nearest neighbours) needs at least "
                              f"{DC_K + 1} real")
    assert f"the real set holds {n_real} image(s)" in problem


def test_the_needs_follow_each_metrics_definition():
    # k nearest neighbours among N points exist only for k <= N - 1 (the point itself excluded)
    assert set_size_problems(MetricsSpec(fid_n_gen=DC_K + 1), DC_K + 1, 2) == []
    [gen] = set_size_problems(MetricsSpec(fid_n_gen=DC_K), 100, 2)
    assert f"metrics.fid_n_gen >= {DC_K + 1}" in gen and f"{DC_K} are generated" in gen
    # fid_n_real cuts the real set, and the message says so
    [cut] = set_size_problems(MetricsSpec(fid_n_gen=100, fid_n_real=3), 100, 2)
    assert "holds 3 image(s)" in cut and "metrics.fid_n_real = 3" in cut
    [shots] = set_size_problems(MetricsSpec(fid_n_gen=100), 100, 1)
    assert shots.startswith("memorisation needs at least 2 shots") and "target.shots" in shots


@pytest.mark.parametrize("n_images", [2, 3, 5])
def test_a_target_too_small_for_a_metric_is_refused_before_any_run_folder(
        n_images, source_checkpoint, tmp_path):
    folder = write_pngs(tmp_path / "few", n_images)
    out = tmp_path / "runs"
    result = cli.invoke(app, ["run", "--methods", "tgan", "--target", str(folder),
                              "--protocol", "embedded", "--set",
                              f"source.checkpoint={source_checkpoint}", "--set",
                              f"target.shots={n_images}", *TINY_METRICS, "--out", str(out)])
    message = one_error(result)
    assert "density and coverage" in message and f"holds {n_images} image(s)" in message
    assert "give a target set of at least 6 images" in message
    assert not out.exists()


def test_six_images_are_enough(source_checkpoint, tmp_path):
    folder = write_pngs(tmp_path / "six", DC_K + 1)
    spec = tiny_spec(source_checkpoint, target=TargetSpec(data=str(folder), shots=DC_K + 1),
                     metrics=MetricsSpec(fid_backbone="toy", fid_n_gen=DC_K + 1,
                                         lpips_backbone="toy", lpips_n_samples=20))
    preflight.check_runs([spec])  # no error


# --- track checks before it writes --------------------------------------------------------------


def _track_args(ckpts: Path, target: str, out: Path, config: Path) -> list[str]:
    return ["track", str(ckpts), "--method", "ext", "--config", str(config), "--target",
            target, "--no-source", "--out", str(out)]


@pytest.fixture
def track_setup(source_checkpoint, tmp_path):
    data = tiny_spec(source_checkpoint).to_dict()
    for key in ("experiment", "method", "seed", "method_params", "plugins"):
        data.pop(key)
    data["name"] = "ext"
    data["metrics"].update(realism="auto", ground_truth="auto")  # folder targets follow
    config = tmp_path / "exp.toml"
    config.write_text(dumps_toml(data))
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    shutil.copy(source_checkpoint, ckpts / "000006.pt")
    return ckpts, config


@pytest.mark.parametrize("bad", ["empty", "missing", "too-small", "protocol"])
def test_track_refuses_a_bad_input_before_writing_and_the_corrected_command_then_runs(
        bad, track_setup, tmp_path):
    ckpts, config = track_setup
    out = tmp_path / "runs"
    good = write_pngs(tmp_path / "good", 12)
    target = str(good)
    if bad == "empty":
        target = str(tmp_path / "empty")
        Path(target).mkdir()
    elif bad == "missing":
        target = str(tmp_path / "nowhere")
    elif bad == "too-small":
        target = str(write_pngs(tmp_path / "few", 4))
    args = _track_args(ckpts, target, out, config)
    if bad == "too-small":
        args += ["--set", "target.shots=4"]
    if bad == "protocol":
        args += ["--protocol", "no-such-protocol"]
    message = one_error(cli.invoke(app, args))
    assert {"empty": "empty", "missing": "does not exist", "too-small": "density and coverage",
            "protocol": "no-such-protocol"}[bad] in message
    assert not out.exists()  # nothing created: no config.toml, no .lock

    result = cli.invoke(app, _track_args(ckpts, str(good), out, config)
                        + ["--set", "target.shots=4"])
    assert result.exit_code == 0, result.output
    assert load_trajectories(out)["iteration"].tolist() == [6]


def test_track_without_weights_names_them_before_writing(track_setup, tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTSCOPE_OFFLINE", "1")
    monkeypatch.setenv("ADAPTSCOPE_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    ckpts, config = track_setup
    out = tmp_path / "runs"
    args = _track_args(ckpts, str(write_pngs(tmp_path / "good", 12)), out, config)
    message = one_error(cli.invoke(app, [*args, "--set", "metrics.fid_backbone=inception"]))
    assert "inception-2015-12-05.pt" in message
    assert not out.exists()


def test_the_evaluator_itself_refuses_too_small_sets(source_checkpoint, tmp_path):
    """A library caller without the preflight gets the same message, not a numpy error."""
    from adaptscope.track.evaluate import Evaluator
    from adaptscope.track.target import load_target

    folder = write_pngs(tmp_path / "few", 4)
    target = load_target(str(folder), 16, shots=4)
    with pytest.raises(DataError, match="density and coverage .* needs at least 6 real"):
        Evaluator(tiny_spec(source_checkpoint).metrics, target, seed=0)
