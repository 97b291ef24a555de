"""The checkpoint-hooked tracker: the only writer of trajectories and sample grids.

The loop calls `record` at every point of the evaluation schedule. Iterations already in the
trajectory are skipped, so a resumed run neither duplicates nor loses rows; each row is appended
atomically, so a kill at any moment leaves every earlier row readable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from adaptscope.data.domains import TargetData
from adaptscope.images import save_grid, to_uint8
from adaptscope.models import Generator
from adaptscope.track import schema
from adaptscope.track.evaluate import Evaluator
from adaptscope.track.store import append_rows, recorded_iterations
from adaptscope.train.spec import RunSpec


class Tracker:
    """Evaluates on the schedule and appends one trajectory row per evaluation."""

    def __init__(self, spec: RunSpec, run_dir: Path, target: TargetData):
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.recorded = recorded_iterations(self.run_dir)
        self.evaluator = Evaluator(spec, target)
        self.config = spec.to_dict()
        self.protocol = self.evaluator.protocol
        shots = to_uint8(target.shots)
        np.save(self.run_dir / schema.SHOTS_FILE, shots)
        save_grid(shots, self.run_dir / "shots.png", ncol=len(shots))

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
        (self.run_dir / schema.SAMPLES_DIR).mkdir(exist_ok=True)
        np.save(self.run_dir / schema.sample_file(iteration, "npy"), result.grid)
        save_grid(result.grid, self.run_dir / schema.sample_file(iteration, "png"))
        append_rows(self.run_dir, [row], config=self.config, protocol=self.protocol)
        self.recorded.add(iteration)
        return row
