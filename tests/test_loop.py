"""The adaptation loop end to end on a tiny source model: every method, determinism, resume,
NaN handling, and the `adaptscope run` command (including a SIGKILL and --resume)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from _tiny_world import CH, metric_rows, run_crashing_at, tiny_spec, write_experiment

from adaptscope import load_trajectories
from adaptscope.embedded import toyfaces
from adaptscope.errors import TrainingDiverged
from adaptscope.models import Generator
from adaptscope.spec import ScheduleSpec
from adaptscope.track import rundir
from adaptscope.track.store import read_metadata
from adaptscope.train.loop import run_adaptation


@pytest.mark.parametrize("method", ["tgan", "freezed", "ewc", "cdc", "dcl", "adam", "rick",
                                    "minegan", "bsa"])
def test_every_method_runs_and_records_the_schedule(method, source_checkpoint, tmp_path):
    events = []
    run_dir = run_adaptation(tiny_spec(source_checkpoint, method), tmp_path / "run",
                             on_event=events.append)
    df = load_trajectories(run_dir)
    assert df["iteration"].tolist() == [0, 2, 4]
    assert df["images_seen"].tolist() == [0, 8, 16]
    assert (df["method"] == method).all() and (df["fid_backbone"].str.startswith("toy")).all()
    assert df[["fid", "intra_lpips", "realism_pt", "nearest_shot_lpips"]].notna().all().all()
    assert df["realism_pt"].between(0, 1).all()
    assert (run_dir / rundir.DONE_FILE).exists()
    assert (run_dir / rundir.sample_file(4, "png")).exists()
    assert (run_dir / rundir.sample_file(2, "npy")).exists()
    assert (run_dir / "checkpoints" / "latest.pt").exists()
    assert [e["iteration"] for e in events if e["kind"] == "eval"] == [0, 2, 4]
    protocol = read_metadata(run_dir)["protocol"]  # FID's reference: the full target set
    assert protocol["fid_real_images"] == len(toyfaces.full_set("sunglasses")) == 2500


def test_training_changes_the_generator_and_iteration_zero_is_the_source(source_checkpoint,
                                                                         tmp_path):
    a = metric_rows(run_adaptation(tiny_spec(source_checkpoint, "tgan"), tmp_path / "a"))
    b = metric_rows(run_adaptation(tiny_spec(source_checkpoint, "dcl"), tmp_path / "b"))
    pd.testing.assert_series_equal(a.iloc[0], b.iloc[0], check_names=False)  # same source
    assert a.loc[2, "fid"] != a.loc[0, "fid"]


@pytest.mark.slow
def test_same_seed_gives_the_same_trajectory(source_checkpoint, tmp_path):
    spec = tiny_spec(source_checkpoint, "cdc")
    a = metric_rows(run_adaptation(spec, tmp_path / "a"))
    b = metric_rows(run_adaptation(spec, tmp_path / "b"))
    pd.testing.assert_frame_equal(a, b)
    c = metric_rows(run_adaptation(replace(spec, seed=1), tmp_path / "c"))
    assert not a.equals(c)


@pytest.mark.slow
@pytest.mark.parametrize("method,cheap_every", [  # state: RNGs; Fisher; anchors, head
    ("dcl", 0), ("ewc", 0), ("cdc", 0), ("adam", 0), ("rick", 0), ("minegan", 0), ("bsa", 0),
    ("dcl", 1),  # cheap rows at 1, 3, 5: the one at 3 recorded before the crash, none saved
])
def test_crash_then_rerun_resumes_to_the_uninterrupted_trajectory(source_checkpoint, tmp_path,
                                                                  method, cheap_every):
    """A resumed run restores the method's state instead of computing it again: re-running
    EWC's Fisher or redrawing CDC's anchors on resume would change the rows after it. Every
    column but the wall time is compared, the loss means since the previous row included."""
    spec = tiny_spec(source_checkpoint, method,
                     schedule=ScheduleSpec(iterations=6, eval_every=2, cheap_every=cheap_every))
    full = load_trajectories(run_adaptation(spec, tmp_path / "full")).drop(columns="wall_time_s")

    run_crashing_at(spec, tmp_path / "crashed", 3)
    recorded = [0, 1, 2, 3] if cheap_every else [0, 2]
    assert metric_rows(tmp_path / "crashed")["iteration"].tolist() == recorded
    run_adaptation(spec, tmp_path / "crashed")  # resumes from the checkpoint at iteration 2
    resumed = load_trajectories(tmp_path / "crashed").drop(columns="wall_time_s")
    pd.testing.assert_frame_equal(resumed, full)


def test_nan_loss_stops_with_the_iteration_and_keeps_rows(source_checkpoint, tmp_path,
                                                          monkeypatch):
    from adaptscope.methods.tgan import TGAN

    def poisoned(self, step, fake):
        return {"poison": torch.tensor(float("nan"))} if step.iteration == 3 else {}

    monkeypatch.setattr(TGAN, "g_extra_losses", poisoned)
    with pytest.raises(TrainingDiverged, match="'poison' became nan at iteration 3"):
        run_adaptation(tiny_spec(source_checkpoint), tmp_path / "run")
    assert load_trajectories(tmp_path / "run")["iteration"].tolist() == [0, 2]


def test_a_directory_holding_another_run_is_refused(source_checkpoint, tmp_path):
    run_adaptation(tiny_spec(source_checkpoint), tmp_path / "run")
    with pytest.raises(ValueError, match="different config"):
        run_adaptation(tiny_spec(source_checkpoint, seed=3), tmp_path / "run")


def _cli(*args: str, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "adaptscope.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_cli_run_killed_and_resumed_gives_the_same_rows(source_checkpoint, tmp_path):
    config = tmp_path / "exp.toml"
    write_experiment(config, source_checkpoint)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = _cli("run", "--config", str(config), "--out", str(tmp_path / "ref"), env=env)
    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out
    assert "adaptscope plot" in out

    proc = _cli("run", "--config", str(config), "--out", str(tmp_path / "killed"), env=env)
    traj = tmp_path / "killed" / "cli-sunglasses-tgan-s0" / rundir.TRAJECTORY_FILE
    deadline = time.time() + 240
    while time.time() < deadline:
        if traj.exists() and len(load_trajectories(traj)) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= len(load_trajectories(traj)) < 5  # killed mid-run, earlier rows intact

    again = _cli("run", "--config", str(config), "--out", str(tmp_path / "killed"), env=env)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 2 and "--resume" in out
    resumed = _cli("run", "--resume", "--out", str(tmp_path / "killed"), env=env)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    pd.testing.assert_frame_equal(metric_rows(traj.parent),
                                  metric_rows(tmp_path / "ref" / "cli-sunglasses-tgan-s0"))


@pytest.mark.slow
def test_cli_runs_a_plugin_method_in_worker_processes(source_checkpoint, tmp_path):
    from adaptscope.models import load_checkpoint
    from adaptscope.track.rundir import CHECKPOINT_FILE as CHECKPOINT

    config = tmp_path / "exp.toml"
    write_experiment(config, source_checkpoint)
    plugin = Path(__file__).resolve().parents[1] / "experiments" / "example_plugin.py"
    proc = _cli("run", "--config", str(config), "--plugin", str(plugin), "--methods",
                "frozen_mapping", "--seeds", "0,1", "--workers", "2", "--iterations", "4",
                "--eval-every", "2", "--out", str(tmp_path / "runs"),
                env={**os.environ, "OMP_NUM_THREADS": "1"})
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    df = load_trajectories(tmp_path / "runs")
    assert set(df["method"]) == {"frozen_mapping"} and sorted(set(df["seed"])) == [0, 1]
    assert sorted(set(df["iteration"])) == [0, 2, 4]

    # The plugin's own behaviour took effect: the mapping network kept its source weights.
    source = load_checkpoint(source_checkpoint).g.state_dict()
    adapted = load_checkpoint(tmp_path / "runs" / "cli-sunglasses-frozen_mapping-s0"
                              / CHECKPOINT).g.state_dict()
    mapping = [k for k in source if k.startswith("style.")]
    synthesis = [k for k in source if not k.startswith(("style.", "noises."))]
    assert mapping and all(torch.equal(source[k], adapted[k]) for k in mapping)
    assert any(not torch.equal(source[k], adapted[k]) for k in synthesis)


@pytest.mark.parametrize("n_styles", [1, 2])
def test_path_length_penalty_is_the_same_when_the_mapping_network_is_frozen(n_styles):
    from adaptscope.methods import Method, MethodContext
    from adaptscope.train.losses import g_path_length_penalty
    from adaptscope.train.step import _path_length_sample

    torch.manual_seed(0)
    g = Generator(16, 32, 2, channels=CH)
    styles = list(torch.randn(n_styles, 2, 32).unbind(0))  # two: style mixing

    def penalty_and_synthesis_grads():
        torch.manual_seed(1)  # the same noise maps, mixing point and projection in both cases
        random.seed(1)
        fake, latents = _path_length_sample(g, Method(None, MethodContext(g=g, d=None)), styles)
        pl, _ = g_path_length_penalty(fake, latents, torch.zeros(()))
        synthesis = [p for n, p in g.named_parameters() if not n.startswith("style.")]
        return pl, torch.autograd.grad(pl, synthesis, allow_unused=True)

    reference_pl, reference_grads = penalty_and_synthesis_grads()
    g.style.requires_grad_(False)
    frozen_pl, frozen_grads = penalty_and_synthesis_grads()
    torch.testing.assert_close(frozen_pl, reference_pl)
    assert sum(a is not None for a in reference_grads) > 10
    for a, b in zip(frozen_grads, reference_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
