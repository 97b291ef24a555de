"""Settings follow the target, and every input is checked before the first write.

A folder target runs with the default settings (toy realism and ground truth are for ToyFaces
targets only, so "auto" resolves them from the target), the embedded default still resolves to
exactly the config it had, and a bad input of any kind fails with one `error:` line before any run
folder exists.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _cli_checks import one_error, write_pngs
from _tiny_world import tiny_spec
from typer.testing import CliRunner

import adaptscope.train.preflight as preflight
from adaptscope import load_trajectories
from adaptscope.cli import app
from adaptscope.config import dumps_toml, read_toml
from adaptscope.errors import ConfigError
from adaptscope.spec import (
    MetricsSpec,
    RunSpec,
    ScheduleSpec,
    TargetSpec,
    default_config_path,
)
from adaptscope.train.experiment import load_experiment

cli = CliRunner(env={"COLUMNS": "400"})








def tiny_args(source: Path, *more: str) -> list[str]:
    """`adaptscope run` on the tiny source with the embedded default's other settings, small."""
    return ["run", "--methods", "tgan", "--set", f"source.checkpoint={source}",
            "--set", "metrics.fid_n_gen=24", "--set", "metrics.lpips_n_samples=20",
            "--set", "metrics.n_grid=4", "--set", "metrics.batch_size=12", "--workers", "1",
            *more]


# --- A. realism and ground truth follow the target ---------------------------------------------

# The embedded default's tgan run as it was resolved before "auto" existed: every value below is
# what embedded-default.toml (or a field's default) gave, in the order config.toml writes it
# (since then: random flips of the shots, the ADA settings, the shots list file, Adam's betas).
EMBEDDED_DEFAULT_TGAN_S0 = {
    "experiment": "embedded-default", "method": "tgan", "seed": 0,
    "source": {"checkpoint": "toy", "name": "toyfaces-source", "weights": "g"},
    "target": {"data": "toyfaces:sunglasses", "name": "", "shots": 10, "shots_seed": 0,
               "shots_file": ""},
    "schedule": {"iterations": 1000, "eval_every": 100, "cheap_every": 25},
    "train": {"batch": 4, "lr": 0.002, "betas": [0.0, 0.99], "r1_gamma": 0.1, "r1_every": 16,
              "path_regularize": 0.0, "path_every": 4, "path_batch_shrink": 2, "mixing": 0.0,
              "ema_decay": 0.99778,
              "flip": True, "augment": "none", "ada_target": 0.6, "ada_length": 500_000,
              "ada_every": 256, "ada_p": 0.0},
    "metrics": {"protocol": "embedded", "fid_backbone": "toy", "fid_n_gen": 1000,
                "fid_n_real": 0, "lpips_backbone": "toy", "lpips_n_samples": 1000,
                "lpips_max_per_cluster": 50, "lpips_members": "random",
                "lpips_small_clusters": "drop", "cheap_n_samples": 50, "realism": "toy",
                "realism_classifier": "", "ground_truth": True, "n_grid": 8, "batch_size": 100,
                "weights_dir": ""},
    "method_params": {}, "plugins": [], "device": "cpu", "threads": 1,
}


def test_the_embedded_default_resolves_to_the_config_it_always_had():
    cfg = load_experiment(None)
    spec = cfg.spec_for("tgan", 0)
    assert spec.to_dict() == EMBEDDED_DEFAULT_TGAN_S0
    assert dumps_toml(spec.to_dict()) == dumps_toml(EMBEDDED_DEFAULT_TGAN_S0)  # same order too
    shipped = read_toml(default_config_path())["metrics"]  # what was resolved: "auto"
    assert (shipped["realism"], shipped["ground_truth"]) == ("auto", "auto")
    ewc = cfg.spec_for("ewc", 0).to_dict()
    assert ewc == {**EMBEDDED_DEFAULT_TGAN_S0, "method": "ewc", "method_params": {"lam": 100.0}}


def test_auto_follows_the_target_and_a_spec_always_holds_the_resolved_value():
    folder = load_experiment(None, ["target.data=data/my-folder"])
    assert (folder.metrics.realism, folder.metrics.ground_truth) == ("none", False)
    toy = load_experiment(None, ["target.data=toyfaces:babies"])
    assert (toy.metrics.realism, toy.metrics.ground_truth) == ("toy", True)
    # Built in code rather than loaded, a RunSpec resolves "auto" the same way.
    spec = RunSpec("x", "tgan", 0, target=TargetSpec(data="data/my-folder"))
    assert (spec.metrics.realism, spec.metrics.ground_truth) == ("none", False)
    assert MetricsSpec().realism == "auto"  # only a spec (which knows the target) resolves it
    explicit = load_experiment(None, ["target.data=data/my-folder", "metrics.realism=none",
                                      "metrics.ground_truth=false"])
    assert (explicit.metrics.realism, explicit.metrics.ground_truth) == ("none", False)


@pytest.mark.parametrize("setting,named", [
    ("metrics.realism=toy", 'metrics.realism = "toy"'),
    ("metrics.ground_truth=true", "metrics.ground_truth = true"),
])
def test_a_toy_measure_for_a_folder_fails_at_load_time(setting, named, tmp_path):
    folder = write_pngs(tmp_path / "my-folder", 12)
    with pytest.raises(ConfigError, match="is an image folder or zip") as info:
        load_experiment(None, [f"target.data={folder}", setting])
    assert named in str(info.value) and "set metrics." in str(info.value)
    out = tmp_path / "runs"
    result = cli.invoke(app, ["run", "--methods", "tgan", "--target", str(folder), "--set",
                              setting, "--out", str(out)])
    assert named in one_error(result)
    assert not out.exists()


def test_a_folder_target_runs_with_the_default_settings(source_checkpoint, tmp_path):
    folder = write_pngs(tmp_path / "my-folder", 12)
    out = tmp_path / "runs"
    result = cli.invoke(app, tiny_args(source_checkpoint, "--target", str(folder),
                                       "--protocol", "embedded", "--iterations", "2",
                                       "--eval-every", "2", "--out", str(out)))
    assert result.exit_code == 0, result.output
    [run_dir] = [p for p in out.iterdir() if p.is_dir()]
    config = read_toml(run_dir / "config.toml")  # what ran
    assert config["metrics"]["realism"] == "none" and config["metrics"]["ground_truth"] is False
    df = load_trajectories(run_dir)
    assert df["iteration"].tolist() == [0, 2]
    assert all(math.isnan(v) for v in df["realism_pt"]) and df["fid"].notna().all()
    assert "gt_coverage" not in df.columns


# --- B. range checks when the experiment is loaded ---------------------------------------------


@pytest.mark.parametrize("key,value", [
    ("schedule.iterations", "-1"), ("schedule.eval_every", "0"), ("train.batch", "0"),
    ("train.r1_every", "0"), ("train.path_every", "0"), ("train.path_batch_shrink", "0"),
    ("train.lr", "-0.002"), ("train.mixing", "1.5"), ("train.mixing", "-0.1"),
    ("train.ema_decay", "1.0"), ("train.ema_decay", "-0.5"), ("target.shots", "0"),
    ("metrics.fid_n_gen", "1"), ("metrics.lpips_n_samples", "1"),
    ("metrics.lpips_max_per_cluster", "1"), ("metrics.n_grid", "0"),
    ("metrics.batch_size", "0"), ("metrics.realism", "toys"), ("metrics.ground_truth", "yes"),
    ("source.weights", "g_emma"), ("threads", "0"),
])
def test_a_setting_out_of_range_is_named_when_loaded(key, value):
    with pytest.raises(ConfigError, match=f"^{key} = ") as info:
        load_experiment(None, [f"{key}={value}"])
    assert "is not allowed" in str(info.value)


def test_out_of_range_on_the_command_line_is_one_line_and_starts_nothing(tmp_path):
    result = cli.invoke(app, ["run", "--set", "train.mixing=2", "--out", str(tmp_path / "o")])
    assert one_error(result) == (
        "error: train.mixing = 2.0 is not allowed: it needs 0 <= train.mixing <= 1")
    assert not (tmp_path / "o").exists()


def test_the_boundaries_are_allowed(source_checkpoint):
    load_experiment(None, ["schedule.iterations=0", "schedule.eval_every=1", "train.mixing=0",
                           "train.mixing=1", "train.ema_decay=0", "metrics.fid_n_gen=2",
                           "metrics.lpips_max_per_cluster=2", "target.shots=1"])
    for method in ("tgan", "freezed", "ewc", "cdc", "dcl"):
        tiny_spec(source_checkpoint, method)  # the tests' tiny runs are in range


# --- B. the preflight: every input before any run folder -------------------------------------


def test_a_target_without_enough_images_leaves_no_run_folder(source_checkpoint, tmp_path):
    folder = write_pngs(tmp_path / "few", 3)
    out = tmp_path / "runs"
    result = cli.invoke(app, tiny_args(source_checkpoint, "--target", str(folder),
                                       "--out", str(out)))
    message = one_error(result)
    assert str(folder) in message and "10" in message
    assert not out.exists()  # before: config.toml was written, then the run failed inside


def test_an_unreadable_image_is_named_before_any_run_folder(source_checkpoint, tmp_path):
    folder = write_pngs(tmp_path / "target", 12)
    (folder / "img005.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "runs"
    out.mkdir()
    result = cli.invoke(app, tiny_args(source_checkpoint, "--target", str(folder),
                                       "--out", str(out)))
    assert "img005.png" in one_error(result)
    assert not list(out.iterdir())


@pytest.mark.parametrize("setting,message", [
    ("metrics.fid_backbone=nosuch", "nosuch"),
    ("metrics.lpips_backbone=nosuch", "nosuch"),
])
def test_an_unknown_backbone_fails_before_any_run_folder(setting, message, source_checkpoint,
                                                         tmp_path):
    out = tmp_path / "runs"
    result = cli.invoke(app, tiny_args(source_checkpoint, "--set", setting, "--out", str(out)))
    assert message in one_error(result)
    assert not out.exists()


def test_a_missing_realism_classifier_fails_before_any_run_folder(source_checkpoint, tmp_path):
    folder = write_pngs(tmp_path / "target", 12)
    out = tmp_path / "runs"
    result = cli.invoke(app, tiny_args(
        source_checkpoint, "--target", str(folder), "--set", "metrics.realism=classifier",
        "--set", f"metrics.realism_classifier={tmp_path / 'missing.pt'}", "--out", str(out)))
    assert "missing.pt" in one_error(result)
    assert not out.exists()


@pytest.mark.parametrize("domain", ["babies", "sunglasses", "sketches", "afhq-cat"])
def test_the_ffhq_configs_name_their_missing_realism_classifier_and_its_command(
        domain, source_checkpoint, tmp_path, monkeypatch):
    """Source, target and shot list in place, no classifier: one error naming the file and the
    `adaptscope realism train` command that makes it, and no run folder."""
    monkeypatch.chdir(tmp_path)
    folder = write_pngs(tmp_path / "data" / domain, 12)
    names = sorted(p.name for p in folder.iterdir())[:10]
    (tmp_path / "data" / f"{domain}-10shot.txt").write_text("\n".join(names) + "\n")
    config = Path(__file__).resolve().parents[1] / "experiments" / f"ffhq-{domain}.toml"
    cfg = load_experiment(config, [f"source.checkpoint={source_checkpoint}"])
    assert cfg.metrics.realism_classifier == f"checkpoints/realism-{domain}.pt"
    assert cfg.schedule.cheap_every == 50
    result = cli.invoke(app, ["run", "--config", str(config), "--set",
                              f"source.checkpoint={source_checkpoint}", "--out", "runs"])
    message = one_error(result)
    assert f"realism classifier checkpoints/realism-{domain}.pt does not exist" in message
    assert (f"adaptscope realism train --target data/{domain} --source-checkpoint "
            f"{source_checkpoint} --out checkpoints/realism-{domain}.pt --device cuda") in message
    assert not (tmp_path / "runs").exists()


def test_a_source_without_a_discriminator_fails_before_any_run_folder(tmp_path):
    from _tiny_world import CH

    from adaptscope.models import Generator, save_checkpoint

    g_only = tmp_path / "g-only.pt"
    save_checkpoint(g_only, g_ema=Generator(16, 32, 2, channels=CH))
    out = tmp_path / "runs"
    result = cli.invoke(app, tiny_args(g_only, "--out", str(out)))
    assert "has no discriminator" in one_error(result)
    assert not out.exists()


@pytest.mark.parametrize("device,message", [("nosuch", "is not a torch device"),
                                            ("cuda", "no CUDA GPU")])
def test_an_unusable_device_fails_before_any_run_folder(device, message, source_checkpoint,
                                                       tmp_path):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "runs"
    result = cli.invoke(app, tiny_args(source_checkpoint, "--device", device, "--out", str(out)))
    assert message in one_error(result)
    assert not out.exists()


def test_each_distinct_input_is_checked_once(source_checkpoint, tmp_path, monkeypatch):
    calls: dict[str, int] = {"checkpoint": 0, "target": 0, "backbones": 0}

    def counting(name, real):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(preflight, "load_checkpoint",
                        counting("checkpoint", preflight.load_checkpoint))
    monkeypatch.setattr(preflight, "load_target", counting("target", preflight.load_target))
    monkeypatch.setattr(preflight, "_check_backbones",
                        counting("backbones", preflight._check_backbones))
    specs = [tiny_spec(source_checkpoint, method, seed=seed)
             for method in ("tgan", "freezed", "cdc") for seed in (0, 1)]
    preflight.check_runs(specs)
    assert calls == {"checkpoint": 1, "target": 1, "backbones": 1}
    other = TargetSpec(data="toyfaces:babies", shots=10)
    preflight.check_runs([*specs, tiny_spec(source_checkpoint, target=other)])
    assert calls == {"checkpoint": 2, "target": 3, "backbones": 3}


def test_preflight_does_not_change_a_runs_rows(source_checkpoint, tmp_path):
    """The preflight draws from the global RNG while it builds networks; the runs seed it."""
    from _tiny_world import metric_rows

    from adaptscope.train.loop import run_adaptation

    spec = tiny_spec(source_checkpoint, schedule=ScheduleSpec(iterations=2, eval_every=2))
    plain = run_adaptation(spec, tmp_path / "plain")
    torch.manual_seed(123)
    preflight.check_runs([spec])
    checked = run_adaptation(spec, tmp_path / "checked")
    assert metric_rows(checked).equals(metric_rows(plain))
