"""Honest model selection: a validation split held out of the target set (never a shot), FID
against it recorded as `fid_selection`, and the summary's best FID chosen by it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _fakes import ImagesAsGenerator
from PIL import Image
from typer.testing import CliRunner

from adaptscope import load_trajectories
from adaptscope.cli import app
from adaptscope.embedded import toyfaces
from adaptscope.errors import ConfigError, DataError
from adaptscope.spec import MetricsSpec, TargetSpec
from adaptscope.track.evaluate import Evaluator
from adaptscope.track.store import append_rows
from adaptscope.track.target import load_target
from adaptscope.viz.summary import summarize

SIZE = 32


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(row.numpy().tobytes()) for row in x}


def test_the_split_is_disjoint_from_the_reporting_set_and_holds_no_shot():
    whole = load_target("toyfaces:sunglasses", SIZE, shots=10, seed=0)
    split = load_target("toyfaces:sunglasses", SIZE, shots=10, seed=0, validation_fraction=0.2)
    assert len(split.validation) == 500 and len(split.full) == 2000  # round(0.2 x 2500)
    held, kept = _rows(split.validation), _rows(split.full)
    assert not held & kept and held | kept == _rows(whole.full)
    position = {bytes(row.numpy().tobytes()): i for i, row in enumerate(whole.full)}
    held_at = {position[b] for b in held}
    shots_at = set((split.shot_indices - toyfaces.FULL_SET["sunglasses"].start).tolist())
    assert len(held_at) == 500 and not held_at & shots_at  # no shot is held out
    again = load_target("toyfaces:sunglasses", SIZE, shots=10, seed=0, validation_fraction=0.2)
    assert torch.equal(again.validation, split.validation)  # the same split for every run
    assert torch.equal(whole.full, load_target("toyfaces:sunglasses", SIZE, 10, 0).full)


def test_a_folder_target_holds_out_non_shots(tmp_path):
    for i in range(20):
        Image.new("RGB", (8, 8), (i * 12, 255 - i * 12, 7 * i)).save(tmp_path / f"im{i:02d}.png")
    names = ["im00.png", "im05.png", "im10.png", "im15.png"]
    split = load_target(str(tmp_path), 8, shots=4, files=names, validation_fraction=0.25)
    assert len(split.validation) == 5 and len(split.full) == 15
    assert _rows(split.shots) <= _rows(split.full) and not _rows(split.shots) & _rows(
        split.validation)  # a folder's shots are byte for byte members of its full set


def test_a_split_too_small_or_too_large_names_the_setting():
    with pytest.raises(DataError, match="target.validation_fraction = 0.0001"):
        load_target("toyfaces:sunglasses", SIZE, shots=10, seed=0, validation_fraction=0.0001)
    with pytest.raises(ConfigError, match="target.validation_fraction"):
        TargetSpec(validation_fraction=1.0)


def test_selection_fid_is_measured_against_the_held_out_images():
    """A generator returning exactly the held-out images is at FID 0 from them (a set against
    itself), and far from 0 against the reporting set, which does not hold them."""
    target = load_target("toyfaces:sunglasses", SIZE, shots=10, seed=0,
                         validation_fraction=0.024)  # 60 images
    n = len(target.validation)
    metrics = MetricsSpec(fid_backbone="toy", fid_n_gen=n, lpips_backbone="toy",
                          lpips_n_samples=n, lpips_max_per_cluster=n, realism="toy",
                          ground_truth=False, n_grid=4, batch_size=16)
    evaluator = Evaluator(metrics, target, seed=0)
    got = evaluator.evaluate(ImagesAsGenerator(target.validation)).metrics
    assert abs(got["fid_selection"]) < 1e-6 * got["fid"] and got["fid"] > 1.0
    assert evaluator.protocol["fid_selection_images"] == n
    assert evaluator.protocol["fid_real_images"] == 2500 - n
    plain = Evaluator(metrics, load_target("toyfaces:sunglasses", SIZE, 10, 0), seed=0)
    assert "fid_selection" not in plain.evaluate(ImagesAsGenerator(target.validation)).metrics


# (iteration, FID, selection FID): the reporting set's best is at 200, the validation's at 100
TRAJECTORY = [(0, 90.0, 95.0), (100, 60.0, 50.0), (200, 55.0, 58.0), (300, 70.0, 72.0)]


def _write(folder, method: str, selection: bool) -> None:
    run_id = f"e-t-{method}-s0"
    (folder / run_id).mkdir(parents=True)
    append_rows(folder / run_id, [
        {"run_id": run_id, "method": method, "source": "s", "target": "t", "shots": 10,
         "seed": 0, "iteration": it, "images_seen": 4 * it, "evaluation": "full", "fid": fid,
         "fid_selection": sel if selection else None, "intra_lpips": 0.5}
        for it, fid, sel in TRAJECTORY], config={"method": method}, protocol={})


def test_the_best_fid_is_chosen_by_the_validation_split_where_recorded(tmp_path):
    _write(tmp_path, "tgan", selection=True)
    _write(tmp_path, "cdc", selection=False)
    summary = summarize(load_trajectories(tmp_path)).set_index("method")
    assert summary.loc["tgan", "best_fid_mean"] == 60.0  # FID where selection FID is lowest
    assert summary.loc["tgan", "best_fid_selected_on"] == "validation split"
    assert summary.loc["cdc", "best_fid_mean"] == 55.0  # the lowest FID itself
    assert summary.loc["cdc", "best_fid_selected_on"] == "reporting set"


def test_the_report_warns_only_when_selection_used_the_reported_images(tmp_path):
    cli = CliRunner()
    _write(tmp_path / "held", "tgan", selection=True)
    _write(tmp_path / "same", "cdc", selection=False)
    clean = cli.invoke(app, ["report", str(tmp_path / "held"), "--out", str(tmp_path / "r1")])
    assert clean.exit_code == 0, clean.output
    assert "Warning" not in (tmp_path / "r1" / "summary.md").read_text()
    warned = cli.invoke(app, ["report", str(tmp_path / "same"), "--out", str(tmp_path / "r2")])
    assert warned.exit_code == 0, warned.output
    text = (tmp_path / "r2" / "summary.md").read_text()
    assert "Warning: the best FID of CDC is selected on the same images" in text
    assert "validation_fraction" in (tmp_path / "r2" / "index.html").read_text()
    table = pd.read_csv(tmp_path / "r2" / "summary.csv")
    assert list(table["best_fid_selected_on"]) == ["reporting set"]
    assert np.isclose(table["best_fid_mean"].iloc[0], 55.0)


def test_a_run_with_a_split_records_selection_fid_at_full_evaluations(tmp_path,
                                                                      source_checkpoint):
    from _tiny_world import write_experiment

    exp = write_experiment(tmp_path / "e.toml", source_checkpoint, iterations=2, eval_every=2)
    result = CliRunner().invoke(app, ["run", "--config", str(exp), "--out", str(tmp_path / "r"),
                                      "--set", "target.validation_fraction=0.2",
                                      "--set", "schedule.cheap_every=1"])
    assert result.exit_code == 0, result.output
    df = load_trajectories(tmp_path / "r")
    full = df["evaluation"] == "full"
    assert df.loc[full, "fid_selection"].notna().all() and len(df[full]) == 2
    assert df.loc[~full, "fid_selection"].isna().all() and (~full).any()
    assert (df.loc[full, "fid_selection"] != df.loc[full, "fid"]).all()
