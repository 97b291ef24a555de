"""The way back from a rolled-back trajectory gives the rows of a run never interrupted, every
column of them: the loss means of the row at the checkpoint travel in the checkpoint."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from _tiny_world import tiny_spec

import adaptscope.track.tracker as tracker_module
from adaptscope import load_trajectories
from adaptscope.track import rundir
from adaptscope.train.loop import run_adaptation

UNTIMED = ["wall_time_s"]  # the only column a resumed run cannot repeat


class _Killed(Exception):
    """Stands for the process dying before the row of iteration 4 is written."""


def _rows(run_dir) -> pd.DataFrame:
    return load_trajectories(run_dir).drop(columns=UNTIMED).reset_index(drop=True)


@pytest.mark.parametrize("method", ["tgan", "cdc"])
def test_rolling_back_to_the_previous_table_restores_every_column(
        source_checkpoint, tmp_path, monkeypatch, method):
    spec = tiny_spec(source_checkpoint, method=method)
    uninterrupted = _rows(run_adaptation(spec, tmp_path / "whole" / spec.run_id))
    assert uninterrupted["loss_r1"].notna().sum() == 2  # the rows after 0 carry R1's mean

    run_dir = tmp_path / "runs" / spec.run_id
    real = tracker_module.append_rows

    def append_then_die(folder, rows, **kwargs):
        if rows[0]["iteration"] == 4:
            raise _Killed
        return real(folder, rows, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(tracker_module, "append_rows", append_then_die)
        with pytest.raises(_Killed):
            run_adaptation(spec, run_dir)
    table = run_dir / rundir.TRAJECTORY_FILE
    os.replace(run_dir / (rundir.TRAJECTORY_FILE + ".prev"), table)  # the README's way back
    assert load_trajectories(table)["iteration"].tolist() == [0]  # the checkpoint is at 2

    run_adaptation(spec, run_dir)
    pd.testing.assert_frame_equal(_rows(run_dir), uninterrupted)
