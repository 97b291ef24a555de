"""Stage-aware axes on trajectories written by hand: a staged run counted from its last stage's
start (`stage_aligned`, `--align stage`), the x axis in images seen (`--x images`), and the
summary's convergence in total iterations, last-stage iterations and images seen."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from _cli_checks import one_error  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from adaptscope import load_trajectories, stage_aligned  # noqa: E402
from adaptscope.cli import app  # noqa: E402
from adaptscope.track.store import append_rows  # noqa: E402
from adaptscope.viz.curves import plot_realism, stage_starts  # noqa: E402
from adaptscope.viz.panels import with_x_axis  # noqa: E402
from adaptscope.viz.summary import per_run  # noqa: E402

PROBE = 250  # AdAM-like: probing for 250 iterations, then adaptation from the source


def write_run(root: Path, method: str, batch: int, start: int, pt: dict[int, float],
              stage_start: bool = True) -> None:
    """Rows every 50 iterations to 1250 (full every 100 and at the end); p_t from `pt`
    (piecewise constant from each key), stage "probe" before `start` and "adapt" from it."""
    run_id = f"{method}-s0"
    (root / run_id).mkdir(parents=True)
    rows = []
    for it in [*range(0, 1250, 50), 1250]:
        value = pt[max(k for k in pt if k <= it)]
        row = {"run_id": run_id, "method": method, "source": "s", "target": "t", "shots": 10,
               "seed": 0, "iteration": it, "images_seen": it * batch, "wall_time_s": float(it),
               "evaluation": "full" if it % 100 == 0 or it == 1250 else "cheap",
               "realism_pt": value, "nearest_shot_lpips": 0.5, "lpips_backbone": "vgg",
               "stage": "probe" if it < start else "adapt"}
        if stage_start:
            row["stage_start"] = 0 if it < start else start
        if row["evaluation"] == "full":
            row.update(fid=100.0 - value, fid_backbone="inception", fid_n_gen=5000,
                       intra_lpips=0.6 - it / 10_000, intra_lpips_std=0.01)
        rows.append(row)
    append_rows(root / run_id, rows, config={}, protocol={})


@pytest.fixture
def runs(tmp_path) -> Path:
    # AdAM: p_t 0.95 during probing (at 100), back to 0 at the restart, 0.92 from 650 (= 400
    # into adaptation); TGAN (batch 2, one stage): 0.91 from 500.
    write_run(tmp_path, "adam", 4, PROBE, {0: 0.0, 100: 0.95, 250: 0.0, 650: 0.92})
    write_run(tmp_path, "tgan", 2, 0, {0: 0.0, 500: 0.91})
    return tmp_path


def test_stage_aligned_counts_each_run_from_its_last_stage(runs):
    df = load_trajectories(runs)
    aligned = stage_aligned(df)
    adam = aligned[aligned["method"] == "adam"]
    # rows from 250 on (the switch's row becomes 0), counted from it; images likewise (batch 4)
    assert adam["iteration"].tolist()[:3] == [0, 50, 100]
    assert adam["run_iteration"].tolist()[:3] == [250, 300, 350]
    assert adam["iteration"].max() == 1000 and (adam["stage"] == "adapt").all()
    assert adam["images_seen"].tolist()[:2] == [0, 200]
    tgan = aligned[aligned["method"] == "tgan"]  # one stage: unchanged
    original = df[df["method"] == "tgan"]
    assert tgan["iteration"].tolist() == original["iteration"].tolist()
    assert tgan["images_seen"].tolist() == original["images_seen"].tolist()


def test_an_older_file_without_stage_start_aligns_on_its_first_row_of_the_last_stage(tmp_path):
    write_run(tmp_path, "adam", 4, 275, {0: 0.0}, stage_start=False)  # rows at 250, 300
    aligned = stage_aligned(load_trajectories(tmp_path))
    assert aligned["run_iteration"].min() == 300 and aligned["iteration"].min() == 0


def test_the_summary_gives_convergence_in_total_and_last_stage_iterations_and_images(runs):
    rows = per_run(load_trajectories(runs)).set_index("method")
    # AdAM's probing reaches 0.95 at 100, but its adaptation restarts from the source: in its
    # last stage p_t first reaches 0.9 at 650, 400 iterations into it
    assert rows.loc["adam", "converged_iteration"] == 100
    assert rows.loc["adam", "converged_stage_iteration"] == 400
    assert rows.loc["adam", "converged_images_seen"] == 100 * 4
    assert rows.loc["tgan", "converged_iteration"] == 500
    assert rows.loc["tgan", "converged_stage_iteration"] == 500
    assert rows.loc["tgan", "converged_images_seen"] == 500 * 2  # batch 2


def test_curves_in_images_seen_and_aligned_at_the_last_stage(runs):
    df = load_trajectories(runs)
    images = with_x_axis(df, x="images")
    assert images.loc[images["method"] == "tgan", "iteration"].max() == 1250 * 2
    assert stage_starts(images) == {"adam": PROBE * 4.0}  # the dotted line moves with the axis
    ax = plot_realism(images).axes[0]
    assert ax.get_xlabel() == "real images seen"
    aligned = with_x_axis(df, align="stage")
    assert stage_starts(aligned) == {}  # every curve starts at its last stage: no line
    ax = plot_realism(aligned).axes[0]
    assert ax.get_xlabel() == "iteration (generator updates) since the last stage began"
    lines = {tuple(line.get_xdata())[:2] for line in ax.get_lines() if len(line.get_xdata()) > 2}
    # FID at the full evaluations: TGAN's from 0, AdAM's from its first after the switch (300)
    assert lines == {(0, 100), (50, 150)}


def test_plot_and_report_take_the_axis_options(runs, tmp_path):
    cli = CliRunner()
    out = tmp_path / "figures"
    result = cli.invoke(app, ["plot", str(runs), "--out", str(out), "--x", "images",
                              "--align", "stage"])
    assert result.exit_code == 0, result.output
    assert (out / "realism.png").is_file()
    report = tmp_path / "report"
    result = cli.invoke(app, ["report", str(runs), "--out", str(report), "--align", "stage"])
    assert result.exit_code == 0, result.output
    assert "converged (it of last stage)" in (report / "summary.md").read_text()
    for option, value in (("--x", "seconds"), ("--align", "end")):
        result = cli.invoke(app, ["plot", str(runs), "--out", str(out), option, value])
        message = one_error(result)
        allowed = "iterations, images" if option == "--x" else "run, stage"
        assert option in message and repr(value) in message and allowed in message
