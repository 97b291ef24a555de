"""Views of a trajectory table for comparing methods whose runs have stages.

A staged method (AdAM's importance probing, MineGAN's miner-only start, RICK's warm-up) spends
its first iterations on something other than the adaptation its curve is compared on; AdAM's
probing even restarts from the source afterwards. `stage_aligned` counts each run from the start
of its last stage, so every method's curve begins where its adaptation does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def last_stage_start(run: pd.DataFrame) -> int:
    """The iteration where a run's last recorded stage began: from the rows' `stage_start`
    (schema 5), else the first row recorded in that stage (older files: exact only where a row
    falls on the switch), else 0 (no stage recorded, e.g. external checkpoints)."""
    if "stage_start" in run.columns and run["stage_start"].notna().any():
        return int(run["stage_start"].max())
    if "stage" in run.columns and run["stage"].notna().any():
        staged = run.dropna(subset=["stage"]).sort_values("iteration")
        last = staged["stage"].iloc[-1]
        return int(staged.loc[staged["stage"] == last, "iteration"].min())
    return 0


def images_per_iteration(run: pd.DataFrame) -> float:
    """The run's batch, from its rows (`images_seen` / `iteration`); NaN with no row past 0 (or
    a hand-made table without `images_seen`)."""
    later = run[run["iteration"] > 0] if "images_seen" in run.columns else run.iloc[0:0]
    if later.empty:
        return float("nan")
    last = later.sort_values("iteration").iloc[-1]
    return float(last["images_seen"]) / float(last["iteration"])


def stage_aligned(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last stage, with `iteration` and `images_seen` counted from that
    stage's start; `run_iteration` keeps the iteration counted from the run's start.

    For a method of one stage the rows are unchanged (its stage starts at 0). The row at the
    switch, if recorded, becomes iteration 0.
    """
    frames = []
    for _, run in df.groupby("run_id", sort=False):
        start = last_stage_start(run)
        rows = run[run["iteration"] >= start].copy()
        rows.insert(rows.columns.get_loc("iteration") + 1, "run_iteration", rows["iteration"])
        rows["iteration"] = rows["iteration"] - start
        per = images_per_iteration(run)
        if not np.isnan(per):
            rows["images_seen"] = rows["images_seen"] - int(round(start * per))
        frames.append(rows)
    out = (pd.concat(frames, ignore_index=True) if frames
           else df.iloc[0:0].assign(run_iteration=pd.Series(dtype="int64")))
    out.attrs = dict(df.attrs)
    return out
