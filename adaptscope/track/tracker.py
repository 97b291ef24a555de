"""The checkpoint-hooked tracker: the only writer of trajectories and sample grids.

The loop calls `record` at every point of the evaluation schedule. Iterations already in the
trajectory are skipped, so a resumed run neither duplicates nor loses rows; each row is appended
atomically, so a kill at any moment leaves every earlier row readable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from adaptscope.files import atomic_write
from adaptscope.images import save_grid, to_uint8
from adaptscope.models import Generator
from adaptscope.spec import RunSpec
from adaptscope.track.evaluate import Evaluator
from adaptscope.track.rundir import RunDir
from adaptscope.track.store import append_rows, recorded_iterations
from adaptscope.track.target import TargetData


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.save(handle, array))


class Tracker:
    """Evaluates on the schedule and appends one trajectory row per evaluation."""

    def __init__(self, spec: RunSpec, run_dir: RunDir, target: TargetData):
        self.spec = spec
        self.run_dir = run_dir
        self.recorded = recorded_iterations(run_dir.path)
        self.evaluator = Evaluator(spec.metrics, target, spec.seed, spec.device)
        self.config = spec.to_dict()
        self.protocol = {**self.evaluator.protocol,
                         "evaluation_iterations": spec.schedule.evaluation_points()}
        shots = to_uint8(target.shots)
        _save_npy(run_dir.shots_npy, shots)
        save_grid(shots, run_dir.shots_png, ncol=len(shots))

    def record(self, iteration: int, images_seen: int, wall_time_s: float,
               g_ema: Generator) -> dict[str, Any] | None:
        """Evaluate and append the row for `iteration`, unless it is already recorded."""
        if iteration in self.recorded:
            return None
        result = self.evaluator.evaluate(g_ema)
        s = self.spec
        row = {"run_id": s.run_id, "method": s.method, "source": s.source.name,
               "target": s.target.label, "shots": s.target.shots, "seed": s.seed,
               "iteration": iteration, "images_seen": images_seen,
               "wall_time_s": wall_time_s, **result.metrics}
        # Grid first: a row in the table always has its samples on disk.
        np_path, png_path = self.run_dir.sample(iteration, "npy"), self.run_dir.sample(iteration,
                                                                                       "png")
        _save_npy(np_path, result.grid)
        save_grid(result.grid, png_path)
        append_rows(self.run_dir.path, [row], config=self.config, protocol=self.protocol)
        self.recorded.add(iteration)
        return row
