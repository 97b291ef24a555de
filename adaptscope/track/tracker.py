"""The checkpoint-hooked tracker: the only writer of trajectories and sample grids.

The loop calls `record` at every point of the evaluation schedule, and `record_cheap` at every
point of the cheap cadence in between (p_t and the nearest-shot LPIPS only; no sample grid).
Iterations already in the trajectory are skipped, so a resumed run neither duplicates nor loses
rows; each row is appended atomically, so a kill at any moment leaves every earlier row readable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from adaptscope.files import atomic_write
from adaptscope.images import save_grid, to_uint8
from adaptscope.spec import RunSpec
from adaptscope.track.evaluate import Evaluator, Sampled
from adaptscope.track.rundir import RunDir
from adaptscope.track.schema import CHEAP, FULL
from adaptscope.track.store import append_rows, recorded_iterations
from adaptscope.track.target import TargetData


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.save(handle, array))


class Tracker:
    """Evaluates on the schedule and appends one trajectory row per evaluation."""

    def __init__(self, spec: RunSpec, run_dir: RunDir, target: TargetData, cheap: bool = True,
                 family: str = "gan"):
        """`cheap=False` where no cheap evaluations will be recorded whatever the schedule says
        (checkpoints trained elsewhere), so the protocol does not list them. `family` is the
        generator family ("gan", "diffusion") every row records."""
        self.spec = spec
        self.family = family
        self.run_dir = run_dir
        self.recorded = recorded_iterations(run_dir.path)
        self.evaluator = Evaluator(spec.metrics, target, spec.seed, spec.device, family=family)
        self.config = spec.to_dict()
        # The schedule's rule, not its points: a few bytes however long the run.
        rule = spec.schedule.rule(cheap=cheap)
        self.protocol = {**self.evaluator.protocol, "schedule": rule}
        if rule["cheap_every"]:  # absent without them: such a run's protocol is as it was
            self.protocol.update(self.evaluator.cheap_protocol)
        shots = to_uint8(target.shots)
        _save_npy(run_dir.shots_npy, shots)
        save_grid(shots, run_dir.shots_png, ncol=len(shots))

    def record(self, iteration: int, images_seen: int, wall_time_s: float, g_ema: Sampled,
               training: dict[str, float] | None = None) -> dict[str, Any] | None:
        """Evaluate and append the row for `iteration`, unless it is already recorded.

        `training` adds the loop's own columns (loss means since the previous row, ADA's p).
        """
        if iteration in self.recorded:
            return None
        result = self.evaluator.evaluate(g_ema)
        row = {**self._identity(iteration, images_seen, wall_time_s, FULL), **result.metrics,
               **(training or {})}
        # Grid first: a row in the table always has its samples on disk.
        np_path, png_path = self.run_dir.sample(iteration, "npy"), self.run_dir.sample(iteration,
                                                                                       "png")
        _save_npy(np_path, result.grid)
        save_grid(result.grid, png_path)
        append_rows(self.run_dir.path, [row], config=self.config, protocol=self.protocol)
        self.recorded.add(iteration)
        return row

    def record_cheap(self, iteration: int, images_seen: int, wall_time_s: float,
                     g_ema: Sampled,
                     training: dict[str, float] | None = None) -> dict[str, Any] | None:
        """Measure the cheap metrics and append their row for `iteration` (evaluation "cheap",
        the other metrics null, no sample grid), unless it is already recorded."""
        if iteration in self.recorded:
            return None
        row = {**self._identity(iteration, images_seen, wall_time_s, CHEAP),
               **self.evaluator.evaluate_cheap(g_ema), **(training or {})}
        append_rows(self.run_dir.path, [row], config=self.config, protocol=self.protocol)
        self.recorded.add(iteration)
        return row

    def _identity(self, iteration: int, images_seen: int, wall_time_s: float,
                  evaluation: str) -> dict[str, Any]:
        """The columns every row of this run starts with."""
        s = self.spec
        return {"run_id": s.run_id, "family": self.family, "method": s.method,
                "source": s.source.name,
                "target": s.target.label, "shots": s.target.shots, "seed": s.seed,
                "variant": s.variant, "iteration": iteration, "images_seen": images_seen,
                "wall_time_s": wall_time_s, "evaluation": evaluation}
