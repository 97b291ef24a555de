"""The summary's best FID on trajectories whose FIDs are written by hand: the lowest FID of each
run's full evaluations (neither the first, the last, the mean nor the highest), then the mean and
std over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adaptscope import load_trajectories
from adaptscope.track.store import append_rows
from adaptscope.viz.summary import per_run, summarize

# Full evaluations every 100 iterations; the lowest FID falls mid-run in each seed.
FIDS = {0: [250.0, 120.0, 90.0, 130.0, 140.0], 1: [260.0, 100.0, 150.0, 80.0, 95.0]}


def write_run(root: Path, seed: int) -> None:
    """A run with the FIDs of `FIDS[seed]` at its full rows and cheap rows (p_t and the
    nearest-shot LPIPS, no FID) every 50 iterations in between."""
    run_id = f"tgan-s{seed}"
    (root / run_id).mkdir(parents=True)
    rows = []
    for it in range(0, 401, 50):
        full = it % 100 == 0
        row = {"run_id": run_id, "method": "tgan", "source": "s", "target": "t", "shots": 10,
               "seed": seed, "iteration": it, "images_seen": it * 4, "wall_time_s": float(it),
               "evaluation": "full" if full else "cheap", "realism_pt": it / 400,
               "nearest_shot_lpips": 0.5, "lpips_backbone": "vgg"}
        if full:
            row.update(fid=FIDS[seed][it // 100], fid_backbone="inception", fid_n_gen=5000,
                       intra_lpips=0.6, intra_lpips_std=0.01)
        rows.append(row)
    append_rows(root / run_id, rows, config={}, protocol={})


def test_best_fid_is_the_lowest_fid_of_the_full_evaluations(tmp_path):
    for seed in FIDS:
        write_run(tmp_path, seed)
    df = load_trajectories(tmp_path)
    assert df["fid"].isna().sum() == 8  # the cheap rows measure no FID

    runs = per_run(df).set_index("seed")
    assert runs.loc[0, "best_fid"] == 90.0 and runs.loc[1, "best_fid"] == 80.0
    assert runs.loc[0, "final_fid"] == 140.0  # the last is not the best

    row = summarize(df).iloc[0]
    assert row["best_fid_mean"] == pytest.approx(85.0)
    assert row["best_fid_std"] == pytest.approx(np.std([90.0, 80.0], ddof=1))
