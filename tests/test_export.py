"""Exports to TensorBoard and W&B, read back with the viewers' own readers.

Hand-made trajectories with known values (full evaluations every 100 iterations with sample
grids saved as the tracker saves them, cheap ones at the 50s) are exported, then read back with
TensorBoard's EventAccumulator and from the offline W&B run's transaction log: every exported
value must be the parquet's at its iteration, every row must go out exactly once however many
exports follow the trajectory, and a run trained with `--log-to` must export each of its rows
once, a crash and `--resume` included. W&B runs offline only; no service process outlives a test.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _cli_checks import one_error
from _export_readers import (
    tensorboard_images,
    tensorboard_scalars,
    wandb_offline_runs,
)
from _tiny_world import write_experiment
from typer.testing import CliRunner

from adaptscope import load_trajectories
from adaptscope.cli import app
from adaptscope.config import dumps_toml, read_toml
from adaptscope.errors import EXIT_RUN_FAILED
from adaptscope.images import make_grid, save_grid
from adaptscope.track import rundir
from adaptscope.track.export import live_exports
from adaptscope.track.export_sinks import stop_wandb
from adaptscope.track.rundir import RunDir
from adaptscope.track.store import append_rows

cli = CliRunner(env={"COLUMNS": "400"})
RUN_ID = "exp-babies-tgan-s0"
CONFIG = {"experiment": "exp", "method": "tgan", "seed": 0,
          "schedule": {"iterations": 300, "eval_every": 100, "cheap_every": 50},
          "metrics": {"fid_backbone": "toy", "fid_n_gen": 24}}
# Tag -> column: what each exported scalar must hold.
FULL_ONLY = {f"metrics/{c}": c for c in (
    "fid", "fid_n_gen", "kid", "kid_std", "precision", "recall", "density", "coverage",
    "memorised_features", "intra_lpips", "intra_lpips_std", "gt_coverage")}
EVERY_ROW = {
    "metrics/realism_pt": "realism_pt", "metrics/nearest_shot_lpips": "nearest_shot_lpips",
    "metrics/memorised_lpips": "memorised_lpips", "train/loss_g_adv": "loss_g_adv",
    "train/grad_norm_g_adv": "grad_norm_g_adv", "train/ada_p": "ada_p",
    "progress/images_seen": "images_seen", "progress/wall_time_s": "wall_time_s"}
TAGS = {**FULL_ONLY, **EVERY_ROW}


@pytest.fixture(autouse=True)
def offline_wandb(monkeypatch):
    """W&B offline with no credentials; afterwards its service process is stopped and no W&B
    process started by this one is left running."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    yield
    stop_wandb()
    deadline = time.monotonic() + 10
    while _wandb_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _wandb_children(), f"W&B processes left running: {_wandb_children()}"


def _wandb_children() -> list[str]:
    """Live W&B child processes of this one (wandb-core, ...; Linux /proc), by command name.
    Other children are left out: fixtures of other modules may hold some for the session."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        name = head.split("(", 1)[1]
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and "wandb" in name:
            found.append(name)
    return found


def _value(it: int, column: str) -> float:
    """A distinct, non-round value per iteration and column."""
    return round(0.1 + it / 997 + sum(map(ord, column)) / 1013, 9)


def write_rows(root: Path, iterations, run_id: str = RUN_ID) -> Path:
    """Append hand-made rows (full at multiples of 100 with their sample grids, cheap
    otherwise) to `root/run_id`, with its config.toml."""
    run_dir = root / run_id
    (run_dir / rundir.SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
    (run_dir / rundir.CONFIG_FILE).write_text(dumps_toml(CONFIG))
    rows = []
    for it in iterations:
        full = it % 100 == 0
        row = {"run_id": run_id, "method": "tgan", "source": "ffhq", "target": "babies",
               "shots": 10, "seed": 0, "iteration": it, "images_seen": it * 4,
               "wall_time_s": it * 0.37, "evaluation": "full" if full else "cheap",
               "protocol": "custom", "lpips_backbone": "toy",
               **{c: _value(it, c) for c in EVERY_ROW.values()
                  if c not in ("images_seen", "wall_time_s")}}
        if full:
            row.update({c: _value(it, c) for c in FULL_ONLY.values()}, fid_n_gen=24,
                       fid_backbone="toy")
            grid = np.random.default_rng(it).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
            np.save(run_dir / rundir.sample_file(it, "npy"), grid)
            save_grid(grid, run_dir / rundir.sample_file(it, "png"))
        rows.append(row)
    append_rows(run_dir, rows, config=CONFIG, protocol={"fid_backbone": "toy"})
    return run_dir


def expected(run_dir: Path, tags=TAGS, as_float32: bool = True) -> dict[str, list]:
    """Tag -> [(iteration, value)] of the parquet's non-null values, as TensorBoard stores them
    (float32) or exactly."""
    df = load_trajectories(run_dir)
    cast = (lambda v: float(np.float32(v))) if as_float32 else float
    return {tag: [(int(it), cast(v)) for it, v in zip(df["iteration"], df[col], strict=True)
                  if not pd.isna(v)] for tag, col in tags.items()}


def export(*args: str, code: int = 0):
    result = cli.invoke(app, ["export", *args])
    assert result.exit_code == code, result.output
    return result


# --- TensorBoard ----------------------------------------------------------------------------


def test_tensorboard_holds_every_parquet_value_at_its_iteration(tmp_path):
    run_dir = write_rows(tmp_path / "runs", range(0, 201, 50))
    result = export(str(tmp_path / "runs"), "--tensorboard", str(tmp_path / "tb"))
    assert f"{RUN_ID}: 5 new row(s) -> tensorboard" in result.stdout

    scalars = tensorboard_scalars(tmp_path / "tb" / RUN_ID)
    assert set(scalars) == set(TAGS)  # no string column, no identity column
    assert scalars == expected(run_dir)
    assert [s for s, _ in scalars["metrics/fid"]] == [0, 100, 200]  # cheap rows have none
    assert [s for s, _ in scalars["metrics/realism_pt"]] == [0, 50, 100, 150, 200]

    images = tensorboard_images(tmp_path / "tb" / RUN_ID)
    assert [step for step, _ in images] == [0, 100, 200]
    for step, image in images:  # the grid the tracker's PNG shows
        saved = np.load(run_dir / rundir.sample_file(step, "npy"))
        np.testing.assert_array_equal(image, make_grid(saved))


def test_each_export_sends_only_the_rows_recorded_since_the_last(tmp_path):
    runs, tb = tmp_path / "runs", tmp_path / "tb"
    run_dir = write_rows(runs, [0, 50, 100])
    export(str(runs), "--tensorboard", str(tb))
    write_rows(runs, [150, 200, 250, 300])
    assert f"{RUN_ID}: 4 new row(s)" in export(str(run_dir), "--tensorboard", str(tb)).stdout

    scalars = tensorboard_scalars(tb / RUN_ID)
    assert scalars == expected(run_dir)  # each step once, in order: nothing sent twice
    assert [s for s, _ in tensorboard_images(tb / RUN_ID)] == [0, 100, 200, 300]
    state = json.loads((tb / ".adaptscope-export" / f"{RUN_ID}.tensorboard.json").read_text())
    assert state == {"run_id": RUN_ID, "backend": "tensorboard", "iteration": 300,
                     "evaluation": "full", "rows": 7}

    files = sorted((tb / RUN_ID).iterdir())
    assert f"{RUN_ID}: 0 new row(s)" in export(str(runs), "--tensorboard", str(tb)).stdout
    assert sorted((tb / RUN_ID).iterdir()) == files  # nothing new: no event file either


def test_another_trajectory_of_an_exported_run_is_refused(tmp_path):
    runs, tb = tmp_path / "runs", tmp_path / "tb"
    write_rows(runs, [0, 50, 100])
    export(str(runs), "--tensorboard", str(tb))
    shutil.rmtree(runs)
    write_rows(runs, [0, 100, 200])  # iteration 100 still there, but 50 gone
    line = one_error(export(str(runs), "--tensorboard", str(tb), code=2))
    assert f"{RUN_ID}.tensorboard.json" in line and "another trajectory of that run" in line


# --- Weights & Biases -------------------------------------------------------------------------


def test_wandb_offline_runs_hold_the_values_config_and_grids(tmp_path):
    runs, wb = tmp_path / "runs", tmp_path / "wb"
    run_dir = write_rows(runs, [0, 50, 100])
    first = export(str(runs), "--wandb", str(wb))
    assert f"{RUN_ID}: 3 new row(s) -> wandb" in first.stdout
    assert f"wandb sync {wb}/wandb/offline-run-*" in first.stdout
    write_rows(runs, [150, 200])
    export(str(runs), "--wandb", str(wb))
    export(str(runs), "--wandb", str(wb))  # nothing new: no third offline run

    offline = wandb_offline_runs(wb, RUN_ID)
    assert len(offline) == 2 and all(r["finished"] for r in offline)
    for run in offline:
        assert (run["id"], run["name"], run["project"], run["group"]) == (
            RUN_ID, RUN_ID, "adaptscope", "exp")
        assert run["config"] == read_toml(run_dir / rundir.CONFIG_FILE)
    history = [step for run in offline for step in run["history"]]
    assert [s for s, _ in history] == [0, 50, 100, 150, 200]  # each row once, in order

    want = expected(run_dir, as_float32=False)  # JSON keeps every digit
    got = {tag: [(s, values[tag]) for s, values in history if tag in values] for tag in TAGS}
    assert got == want
    for step, values in history:
        assert set(values) - set(TAGS) == ({"samples"} if step % 100 == 0 else set())
        if step % 100 == 0:
            image = values["samples"]
            assert image["_type"] == "image-file" and image["caption"] == f"iteration {step}"
            folder = next(r["folder"] for r in offline if step in dict(r["history"]))
            assert (folder / "files" / image["path"]).is_file()


# --- missing extras and bad choices -----------------------------------------------------------


@pytest.mark.parametrize("backend,module", [("tensorboard", "torch.utils.tensorboard"),
                                            ("wandb", "wandb")])
def test_a_missing_extra_is_one_error_naming_its_install(backend, module, tmp_path, monkeypatch):
    write_rows(tmp_path / "runs", [0])
    monkeypatch.setitem(sys.modules, module, None)  # `import` of it now fails
    line = one_error(export(str(tmp_path / "runs"), f"--{backend}", str(tmp_path / "to"),
                            code=2))
    assert f"pip install 'adaptscope[{backend}]'" in line
    assert not (tmp_path / "to").exists()

    out = tmp_path / "out"
    result = cli.invoke(app, ["run", "--log-to", backend, "--out", str(out)])
    assert f"pip install 'adaptscope[{backend}]'" in one_error(result)
    assert not out.exists()  # nothing was started


def test_log_to_takes_known_exports_only(tmp_path):
    result = cli.invoke(app, ["run", "--log-to", "tensorboard,tensorbord", "--out",
                              str(tmp_path / "o")])
    assert "'tensorbord' is not an export" in one_error(result)
    result = cli.invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 2


# --- exports that follow a running study ------------------------------------------------------


def test_live_exports_send_each_row_once_across_a_crash_and_a_resume(tmp_path):
    out = tmp_path / "runs"
    folder = RunDir(out / RUN_ID)
    folder.path.mkdir(parents=True)
    folder.write_log_to(["tensorboard", "wandb"])

    def record(on_event, its):
        write_rows(out, its)
        on_event({"kind": "eval", "run_id": RUN_ID, "iteration": its[-1]})

    with pytest.raises(RuntimeError, match="crash"), live_exports(folder, RUN_ID) as on_event:
        on_event({"kind": "start", "run_id": RUN_ID, "iteration": 0})
        record(on_event, [0])
        record(on_event, [50])
        # Another exporter meanwhile: the run is being exported there, so it is skipped.
        busy = export(str(out), "--tensorboard", str(out / "tensorboard"))
        assert "another process is exporting" in busy.stderr and "new row(s)" not in busy.stdout
        write_rows(out, [100])  # recorded, then the run dies before it is exported
        raise RuntimeError("crash")

    with live_exports(folder, RUN_ID) as on_event:  # the resumed run
        on_event({"kind": "start", "run_id": RUN_ID, "iteration": 100})  # sends 100
        record(on_event, [150])
        record(on_event, [200])
    assert "0 new row(s)" in export(str(out), "--tensorboard", str(out / "tensorboard")).stdout

    assert tensorboard_scalars(out / "tensorboard" / RUN_ID) == expected(folder.path)
    history = [h for r in wandb_offline_runs(out / "wandb", RUN_ID) for h in r["history"]]
    assert [s for s, _ in history] == [0, 50, 100, 150, 200]
    assert {t: [(s, v[t]) for s, v in history if t in v] for t in TAGS} == expected(
        folder.path, as_float32=False)


@pytest.mark.slow
def test_run_log_to_is_recorded_and_resume_keeps_exporting(source_checkpoint, tmp_path,
                                                           monkeypatch, one_thread):
    """A real run with --log-to, crashed after iteration 2 and resumed with --resume."""
    from adaptscope.methods import get_method

    config = write_experiment(tmp_path / "exp.toml", source_checkpoint, iterations=4,
                              eval_every=2)
    out = tmp_path / "runs"
    cls = get_method("tgan")
    after_step = cls.after_step

    def crash(self, step):
        after_step(self, step)
        if step.iteration == 2:
            raise RuntimeError("simulated crash")

    with monkeypatch.context() as m:
        m.setattr(cls, "after_step", crash)
        result = cli.invoke(app, ["run", "--config", str(config), "--out", str(out),
                                  "--log-to", "tensorboard", "--log-to", "wandb"])
    assert result.exit_code == EXIT_RUN_FAILED, result.output
    (run_dir,) = [p.parent for p in out.glob(f"*/{rundir.CONFIG_FILE}")]
    assert RunDir(run_dir).read_log_to() == ["tensorboard", "wandb"]
    assert [s for s, _ in tensorboard_scalars(out / "tensorboard" / run_dir.name)[
        "metrics/fid"]] == [0, 2]

    refused = cli.invoke(app, ["run", "--resume", "--out", str(out), "--log-to", "wandb"])
    assert "takes no --log-to" in one_error(refused)
    result = cli.invoke(app, ["run", "--resume", "--out", str(out)])
    assert result.exit_code == 0, result.output

    df = load_trajectories(run_dir)
    assert list(df["iteration"]) == [0, 2, 4]
    tags = {"metrics/fid": "fid", "metrics/intra_lpips": "intra_lpips",
            "metrics/realism_pt": "realism_pt", "metrics/gt_coverage": "gt_coverage",
            "train/loss_g_adv": "loss_g_adv"}
    scalars = tensorboard_scalars(out / "tensorboard" / run_dir.name)
    assert {t: scalars[t] for t in tags} == expected(run_dir, tags)
    assert [s for s, _ in tensorboard_images(out / "tensorboard" / run_dir.name)] == [0, 2, 4]
    offline = wandb_offline_runs(out / "wandb", run_dir.name)
    history = [h for r in offline for h in r["history"]]
    assert [s for s, _ in history] == [0, 2, 4]
    assert {t: [(s, v[t]) for s, v in history if t in v] for t in tags} == expected(
        run_dir, tags, as_float32=False)
