"""A tiny source model and run spec on ToyFaces: adaptation and tracking in seconds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from adaptscope import load_trajectories
from adaptscope.config import dumps_toml
from adaptscope.models import Discriminator, Generator, save_checkpoint
from adaptscope.spec import (
    LoopSpec,
    MetricsSpec,
    RunSpec,
    ScheduleSpec,
    SourceSpec,
    TargetSpec,
)

CH = {4: 16, 8: 16, 16: 16}
METRIC_COLUMNS = ["iteration", "images_seen", "fid", "realism_pt", "intra_lpips",
                  "intra_lpips_std", "nearest_shot_lpips", "gt_coverage", "gt_replication"]


# Settings that make a method's set-up and schedules fit a run of a few iterations.
TINY_METHOD_PARAMS: dict[str, dict] = {
    "ewc": {"n_fisher": 4},
    "adam": {"probe_iterations": 2, "n_fisher": 4},  # probe 0-1; masks in the checkpoint at 2
    "rick": {"warmup_iter": 1, "fisher_every": 2, "n_fisher": 2},  # estimates at 1, 3, 5
    # mine for steps 0-2 (a resume at 2 crosses the switch), in the code's form: more state
    "minegan": {"miner_iterations": 3, "input_miner": True},
}


def make_source_checkpoint(path: Path) -> Path:
    """A seeded, untrained 16 px StyleGAN2 saved as a training checkpoint."""
    torch.manual_seed(0)
    g, d = Generator(16, 32, 2, channels=CH), Discriminator(16, channels=CH)
    save_checkpoint(path, g_ema=g, g=g, d=d)
    return path


def tiny_spec(source: Path, method: str = "tgan", **changes) -> RunSpec:
    spec = RunSpec(
        experiment="t", method=method, seed=0,
        source=SourceSpec(checkpoint=str(source), name="tiny"),
        target=TargetSpec(data="toyfaces:sunglasses", shots=10),
        schedule=ScheduleSpec(iterations=4, eval_every=2),
        train=LoopSpec(batch=4, r1_gamma=0.01, r1_every=2, path_regularize=2.0, path_every=2,
                       mixing=0.5),
        metrics=MetricsSpec(fid_backbone="toy", fid_n_gen=24, lpips_backbone="toy",
                            lpips_n_samples=20, realism="toy", ground_truth=True, n_grid=4,
                            batch_size=12),
        method_params=TINY_METHOD_PARAMS.get(method, {}),
    )
    return replace(spec, **changes)


def write_experiment(path: Path, source: Path, iterations: int = 40, eval_every: int = 10,
                     methods: tuple[str, ...] = ("tgan",), workers: int = 1) -> Path:
    """An experiment TOML (name "cli") of the tiny world, for the command line."""
    spec = tiny_spec(source, schedule=ScheduleSpec(iterations=iterations, eval_every=eval_every))
    data = spec.to_dict()
    for key in ("experiment", "method", "seed", "method_params"):
        data.pop(key, None)
    data.update({"name": "cli", "methods": list(methods), "seeds": [0], "workers": workers})
    path.write_text(dumps_toml(data))
    return path


def metric_rows(run_dir: Path) -> pd.DataFrame:
    return load_trajectories(run_dir)[METRIC_COLUMNS].reset_index(drop=True)


def run_crashing_at(spec: RunSpec, run_dir: Path, iteration: int) -> None:
    """Run `spec` into `run_dir` until it crashes right after `iteration`'s step (the method's
    own `after_step` still runs first), as a killed run would, leaving its folder to resume."""
    import pytest

    from adaptscope.methods import get_method
    from adaptscope.train.loop import run_adaptation

    cls = get_method(spec.method)
    after_step = cls.after_step

    def crash(self, step):
        after_step(self, step)
        if step.iteration == iteration:
            raise RuntimeError("simulated crash")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(cls, "after_step", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_adaptation(spec, run_dir)
