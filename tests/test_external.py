"""`adaptscope track`: checkpoints saved by another training code, measured like adaptscope runs."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from _tiny_world import metric_rows, tiny_spec
from typer.testing import CliRunner

from adaptscope import load_trajectories
from adaptscope.cli import app
from adaptscope.config import dumps_toml
from adaptscope.models import CheckpointError, Generator, save_checkpoint
from adaptscope.track import rundir
from adaptscope.track.external import checkpoint_iteration, find_checkpoints, track_checkpoints
from adaptscope.train.loop import run_adaptation


@pytest.mark.parametrize(("name", "iteration"), [
    ("000500.pt", 500), ("iter_1500.pt", 1500), ("ckpt-2-3000.pth", 3000), ("0.pt", 0)])
def test_iteration_is_the_last_number_of_the_file_name(name, iteration):
    assert checkpoint_iteration(Path(name)) == iteration


def test_checkpoint_without_a_number_is_refused():
    with pytest.raises(CheckpointError, match="final.pt: no iteration number"):
        checkpoint_iteration(Path("final.pt"))


def test_folders_and_files_are_collected_by_iteration(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for name in ("001000.pt", "000500.pt", "notes.txt"):
        (folder / name).touch()
    extra = tmp_path / "iter_1500.pt"
    extra.touch()
    found = find_checkpoints([folder, extra])
    assert found == [(500, folder / "000500.pt"), (1000, folder / "001000.pt"), (1500, extra)]


def test_two_files_claiming_one_iteration_are_refused(tmp_path):
    (tmp_path / "000500.pt").touch()
    (tmp_path / "iter_500.pt").touch()
    with pytest.raises(CheckpointError, match="both claim iteration 500"):
        find_checkpoints([tmp_path])


def test_empty_folder_and_missing_path_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=f"{tmp_path}: no .pt or .pth files"):
        find_checkpoints([tmp_path])
    with pytest.raises(CheckpointError, match="nope: no such file or folder"):
        find_checkpoints([tmp_path / "nope"])


@pytest.mark.slow
def test_tracking_a_checkpoint_reproduces_the_row_of_the_run_that_saved_it(
        source_checkpoint, tmp_path):
    spec = tiny_spec(source_checkpoint)
    run_dir = run_adaptation(spec, tmp_path / "trained")
    ckpts = tmp_path / "elsewhere"
    ckpts.mkdir()
    # saved at the last evaluation
    shutil.copy(run_dir / rundir.CHECKPOINT_FILE, ckpts / "000004.pt")

    external = replace(spec, method="tgan-elsewhere")
    tracked = track_checkpoints(external, find_checkpoints([ckpts]), tmp_path / external.run_id)
    trained_rows = metric_rows(run_dir)
    pd.testing.assert_frame_equal(metric_rows(tracked),
                                  trained_rows[trained_rows.iteration.isin([0, 4])]
                                  .reset_index(drop=True))
    df = load_trajectories(tracked)
    assert set(df["method"]) == {"tgan-elsewhere"} and df["wall_time_s"].isna().all()
    assert (tracked / rundir.sample_file(4, "png")).exists()
    assert (tracked / rundir.DONE_FILE).exists()  # `adaptscope run --resume` leaves it alone

    # Run again with one more checkpoint: only the new one is evaluated; earlier rows stay.
    shutil.copy(source_checkpoint, ckpts / "000002.pt")
    before = (tracked / rundir.sample_file(4, "npy")).stat().st_mtime_ns
    track_checkpoints(external, find_checkpoints([ckpts]), tracked)
    assert metric_rows(tracked)["iteration"].tolist() == [0, 2, 4]
    assert (tracked / rundir.sample_file(4, "npy")).stat().st_mtime_ns == before


def test_generators_of_different_sizes_are_refused(source_checkpoint, tmp_path):
    torch.manual_seed(0)
    big = Generator(32, 32, 2, channels={4: 8, 8: 8, 16: 8, 32: 8})
    save_checkpoint(tmp_path / "000010.pt", g_ema=big)
    spec = tiny_spec(source_checkpoint, method="mixed")
    with pytest.raises(CheckpointError, match="a 32 px generator among 16 px ones"):
        track_checkpoints(spec, find_checkpoints([tmp_path / "000010.pt"]), tmp_path / "run")
    assert metric_rows(tmp_path / "run")["iteration"].tolist() == [0]  # the source row is kept


def test_cli_tracks_checkpoints_and_reports_bad_names(source_checkpoint, tmp_path):
    spec = tiny_spec(source_checkpoint)
    data = spec.to_dict()
    for key in ("experiment", "method", "seed", "method_params", "plugins"):
        data.pop(key)
    data["name"] = "ext"
    config = tmp_path / "exp.toml"
    config.write_text(dumps_toml(data))
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    shutil.copy(source_checkpoint, ckpts / "000006.pt")

    runner = CliRunner(env={"COLUMNS": "400"})  # no wrapping inside the messages checked
    result = runner.invoke(app, ["track", str(ckpts), "--method", "cdc-official", "--config",
                                 str(config), "--no-source", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "adaptscope plot" in result.output
    df = load_trajectories(tmp_path / "runs")
    assert df["run_id"].unique().tolist() == ["ext-sunglasses-cdc-official-s0"]
    assert df["iteration"].tolist() == [6] and df["images_seen"].tolist() == [24]
    assert not math.isnan(df["fid"].iloc[0])

    (ckpts / "final.pt").touch()
    result = runner.invoke(app, ["track", str(ckpts), "--method", "cdc-official", "--config",
                                 str(config), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert f"{ckpts / 'final.pt'}: no iteration number in the file name" in result.output
