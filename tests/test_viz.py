"""Figures, the summary quantities and the plot/report commands, on synthetic run directories."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from _trajectory_fixtures import make_run, make_runs  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from adaptscope import load_trajectories  # noqa: E402
from adaptscope.cli import app  # noqa: E402
from adaptscope.viz import (  # noqa: E402
    FigureSkipped,
    make_figures,
    method_palette,
    plot_diversity,
    plot_precision_recall,
    plot_quality_diversity,
    plot_realism,
    plot_replication,
    plot_sample_evolution,
    summarize,
)

METHODS = ("tgan", "cdc", "dcl")
SMALL = {"size": 8, "n_samples": 2}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    return make_runs(root, METHODS, (0, 1, 2), with_gt=True, **SMALL)


@pytest.fixture(scope="module")
def df(runs) -> pd.DataFrame:
    return load_trajectories(runs)


def visible_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def line_colours(ax) -> set[str]:
    return {to_hex(line.get_color()) for line in ax.get_lines()}


def legend_labels(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts() if t.get_text().strip()]


# --- palette -------------------------------------------------------------------------------


def test_palette_is_fixed_per_method_whatever_the_subset():
    full = method_palette(["dcl", "tgan", "mine", "adam", "cdc"])
    assert full["dcl"] == "#d55e00" and full["tgan"] == "#0173b2"
    assert method_palette(["mine"])["mine"] == full["mine"]
    assert len(set(full.values())) == 5


# --- curves --------------------------------------------------------------------------------


def test_realism_figure_has_fid_and_pt_panels_with_backbone_labels(df):
    fig = plot_realism(df)
    axes = visible_axes(fig)
    assert len(axes) == 2
    assert "inception" in axes[0].get_ylabel() and "5000 generated" in axes[0].get_ylabel()
    assert "realism classifier p\N{LATIN SUBSCRIPT SMALL LETTER T}" in axes[1].get_ylabel()
    assert axes[0].get_title() == "ffhq → babies, 10-shot"
    assert legend_labels(fig) == ["TGAN", "CDC", "DCL"]
    # three seeds: a confidence band per method
    assert len(axes[0].collections) == len(METHODS)


def test_the_same_method_has_the_same_colour_in_every_figure(df):
    palette = method_palette(METHODS)
    for fig in (plot_realism(df), plot_diversity(df), plot_replication(df)):
        for ax in visible_axes(fig):
            assert line_colours(ax) == set(palette.values())


def test_diversity_means_are_the_seed_means(df):
    ax = visible_axes(plot_diversity(df))[0]
    dcl = next(line for line in ax.get_lines() if to_hex(line.get_color()) == "#d55e00")
    expected = df[df["method"] == "dcl"].groupby("iteration")["intra_lpips"].mean()
    np.testing.assert_allclose(dcl.get_ydata(), expected.to_numpy())
    np.testing.assert_array_equal(dcl.get_xdata(), expected.index.to_numpy())


def test_replication_figure_shows_ground_truth_columns_when_present(df, tmp_path):
    labels = [ax.get_ylabel() for ax in visible_axes(plot_replication(df))]
    assert len(labels) == 3 and "ground truth" in labels[1] and "ground truth" in labels[2]
    plain = load_trajectories(make_run(tmp_path, "tgan", 0, **SMALL))
    assert len(visible_axes(plot_replication(plain))) == 1


def test_single_seed_draws_no_band(tmp_path):
    single = load_trajectories(make_runs(tmp_path, METHODS, (0,), **SMALL))
    fig = plot_diversity(single)
    ax = visible_axes(fig)[0]
    assert len(ax.collections) == 0
    assert "single seed" in fig.get_suptitle()


def test_one_wide_band_does_not_set_the_axis_range(tmp_path):
    df = load_trajectories(make_runs(tmp_path, ("tgan", "dcl"), (0, 1, 2), **SMALL))
    wild = (df["method"] == "dcl") & (df["seed"] == 0)
    df.loc[wild, "fid"] += 5000.0  # one seed far off: DCL's 95 % band spans thousands
    ax = visible_axes(plot_realism(df))[0]
    means = df.groupby(["method", "iteration"])["fid"].mean()
    lo, hi = means.min(), means.max()
    bottom, top = ax.get_ylim()
    assert lo - 0.35 * (hi - lo) < bottom <= lo and hi <= top < hi + 0.35 * (hi - lo)
    plain = load_trajectories(make_runs(tmp_path / "plain", ("tgan",), (0, 1, 2), **SMALL))
    ax = visible_axes(plot_realism(plain))[0]
    band = [c.get_paths()[0].vertices[:, 1] for c in ax.collections]
    low, high = min(v.min() for v in band), max(v.max() for v in band)
    assert ax.get_ylim()[0] < low and high < ax.get_ylim()[1]  # narrow bands stay whole


def test_seed_counts_in_the_caption_are_per_panel(tmp_path):
    # three seeds measured with one FID extractor, one seed with another: two panels, and no
    # line averages three seeds in the second
    make_runs(tmp_path / "a", ("tgan",), (0, 1, 2), **SMALL)
    make_run(tmp_path / "b", "tgan", 3, **{**SMALL, "fid_backbone": "dinov2"})
    df = load_trajectories([tmp_path / "a", tmp_path / "b"])
    fig = plot_quality_diversity(df)
    assert len(visible_axes(fig)) == 2
    assert fig.get_suptitle().endswith("mean over 1–3 seeds")


def test_single_evaluation_draws_markers_without_lines(tmp_path):
    once = load_trajectories(make_runs(tmp_path, METHODS, (0, 1), iterations=(0,), **SMALL))
    ax = visible_axes(plot_diversity(once))[0]
    assert all(line.get_linestyle() == "None" and line.get_marker() for line in ax.get_lines())
    plot_quality_diversity(once)  # a single point per method still draws


def test_missing_metric_drops_its_panel_or_skips_the_figure(tmp_path):
    no_pt = load_trajectories(make_runs(tmp_path / "a", METHODS, (0,), with_pt=False, **SMALL))
    assert len(visible_axes(plot_realism(no_pt))) == 1
    blind = load_trajectories(
        make_runs(tmp_path / "b", METHODS, (0,), with_pt=False, with_fid=False, **SMALL)
    )
    with pytest.raises(FigureSkipped, match="fid"):
        plot_realism(blind)
    # without FID the plane falls back to p_t... which is missing too here
    with pytest.raises(FigureSkipped, match="realism_pt"):
        plot_quality_diversity(blind)
    result = make_figures(blind, tmp_path / "out")
    assert any(s.startswith("realism:") for s in result.skipped)
    assert not (tmp_path / "out" / "realism.png").exists()
    assert (tmp_path / "out" / "diversity.png").exists()


def test_two_backbones_never_share_an_axis(tmp_path):
    make_runs(tmp_path, ("tgan", "dcl"), (0,), lpips_backbone="vgg", **SMALL)
    make_run(tmp_path / "alex", "cdc", 0, lpips_backbone="alex", **SMALL)
    mixed = load_trajectories(tmp_path)
    fig = plot_diversity(mixed)
    labels = sorted(ax.get_ylabel() for ax in visible_axes(fig))
    assert len(labels) == 2
    assert "alex" in labels[0] and "vgg" not in labels[0]
    assert "vgg" in labels[1] and "alex" not in labels[1]
    assert len(visible_axes(plot_quality_diversity(mixed))) == 2


# --- quality-diversity plane ----------------------------------------------------------------


def test_plane_marks_start_and_end_iterations(df):
    fig = plot_quality_diversity(df)
    ax = visible_axes(fig)[0]
    assert legend_labels(fig) == ["TGAN", "CDC", "DCL"]
    key = [t.get_text() for t in ax.get_legend().get_texts()]
    assert key == ["start (it 0)", "end (it 3000)"]
    assert not [t for t in ax.texts if t.get_text()]  # a shared schedule is named once
    assert "FID" in ax.get_xlabel() and "LPIPS" in ax.get_ylabel()
    p_t = visible_axes(plot_quality_diversity(df, x="realism_pt"))[0].get_xlabel()
    assert "realism classifier p\N{LATIN SUBSCRIPT SMALL LETTER T}" in p_t
    with pytest.raises(ValueError, match="x must be"):
        plot_quality_diversity(df, x="intra_lpips")


def test_plane_labels_points_when_schedules_differ(tmp_path):
    make_run(tmp_path, "tgan", 0, **SMALL)
    make_run(tmp_path, "dcl", 0, iterations=(0, 500, 1000), **SMALL)
    fig = plot_quality_diversity(load_trajectories(tmp_path))
    ax = visible_axes(fig)[0]
    texts = sorted(t.get_text() for t in ax.texts if t.get_text())
    assert texts == ["it 0", "it 0", "it 1000", "it 3000"]
    assert "last evaluation" in [t.get_text() for t in ax.get_legend().get_texts()]


# --- sample evolution ------------------------------------------------------------------------


def test_sample_evolution_grid_is_methods_by_iterations(df):
    fig = plot_sample_evolution(df, latent_indices=(0, 1), max_columns=4)
    images = [ax for ax in fig.axes if ax.get_images()]
    assert len(images) == 1 + len(METHODS) * 4  # the shots strip, then the grid
    shots = images[0].get_images()[0].get_array()
    assert shots.shape == (8, 8 * 10, 3)
    cell = images[1].get_images()[0].get_array()
    assert cell.shape == (8, 16, 3)  # two latents side by side
    titles = [ax.get_title() for ax in images[1:5]]
    assert titles == ["it 0", "it 1000", "it 2000", "it 3000"]


def test_sample_evolution_shows_the_iterations_every_method_saved(tmp_path):
    """A method evaluated more often (AdAM's extra grid) must not fill the columns with the
    others' "not saved": where two or more iterations are shared, only those are picked."""
    from adaptscope.track.rundir import sample_file

    table = load_trajectories(make_runs(tmp_path, METHODS, (0,), **SMALL))
    first = table[table["method"] == METHODS[0]]["run_id"].iloc[0]
    (Path(table.attrs["run_dirs"][first]) / sample_file(1000, "npy")).unlink()
    fig = plot_sample_evolution(table, latent_indices=(0,), max_columns=4)
    titles = {ax.get_title() for ax in fig.axes if ax.get_images()}
    assert "it 0" in titles and "it 1000" not in titles
    assert not [t for ax in fig.axes for t in ax.texts if t.get_text() == "not saved"]


def test_sample_evolution_needs_run_directories_and_samples(df, tmp_path):
    with pytest.raises(FigureSkipped, match="run directories"):
        plot_sample_evolution(df, run_dirs={})
    bare = load_trajectories(make_runs(tmp_path, METHODS, (0,), samples=False, **SMALL))
    with pytest.raises(FigureSkipped, match="npy"):
        plot_sample_evolution(bare)


# --- summary ---------------------------------------------------------------------------------


def known_table() -> pd.DataFrame:
    its = [0, 1000, 2000, 3000]
    rows = []

    def add(method, seed, **metrics):
        for k, it in enumerate(its):
            rows.append({
                "run_id": f"{method}{seed}", "method": method, "source": "s", "target": "t",
                "shots": 10, "seed": seed, "iteration": it, "fid_backbone": "inception",
                "lpips_backbone": "vgg", **{m: v[k] for m, v in metrics.items()},
            })

    # p_t recorded: converged at 2000 and at 1000; LPIPS slopes -0.05 and -0.03 per 1k.
    add("a", 0, realism_pt=[0.1, 0.5, 0.95, 0.99], intra_lpips=[0.6, 0.55, 0.5, 0.45],
        fid=[200, 150, 120, 110])
    add("a", 1, realism_pt=[0.1, 0.92, 0.99, 1.0], intra_lpips=[0.6, 0.57, 0.54, 0.51],
        fid=[200, 140, 130, 120])
    # no p_t: FID within 10% of its best (100) first at 2000 (105)
    add("b", 0, fid=[200, 120, 105, 100], intra_lpips=[0.6, 0.6, 0.6, 0.6],
        realism_pt=[None] * 4)
    # never reaches p_t 0.9
    add("c", 0, realism_pt=[0.1, 0.2, 0.3, 0.4], intra_lpips=[0.5, 0.4, 0.3, 0.2],
        fid=[1, 2, 3, 4])
    frame = pd.DataFrame(rows)
    return frame.astype({"realism_pt": "float64", "fid": "float64", "intra_lpips": "float64"})


def test_summary_matches_values_known_by_construction():
    out = summarize(known_table()).set_index("method")
    a, b, c = out.loc["a"], out.loc["b"], out.loc["c"]

    assert a["n_seeds"] == 2 and a["n_converged"] == 2
    assert a["converged_iteration_mean"] == pytest.approx(1500)
    assert a["converged_iteration_std"] == pytest.approx(np.std([1000, 2000], ddof=1))
    assert a["intra_lpips_at_convergence_mean"] == pytest.approx((0.5 + 0.57) / 2)
    assert a["relative_diversity_loss_mean"] == pytest.approx((0.25 + 0.15) / 2)
    assert a["lpips_slope_per_1k_mean"] == pytest.approx(-0.04)
    assert a["lpips_slope_per_1k_std"] == pytest.approx(np.std([-0.05, -0.03], ddof=1))
    assert a["final_fid_mean"] == pytest.approx(115)
    assert a["final_intra_lpips_mean"] == pytest.approx(0.48)
    assert a["criterion"] == "p_t >= 0.9"

    assert b["converged_iteration_mean"] == 2000
    assert "FID within 10%" in b["criterion"]
    assert b["relative_diversity_loss_mean"] == 0
    assert b["lpips_slope_per_1k_mean"] == pytest.approx(0, abs=1e-12)
    assert np.isnan(b["converged_iteration_std"])  # one seed

    assert c["n_converged"] == 0 and np.isnan(c["converged_iteration_mean"])
    assert np.isnan(c["intra_lpips_at_convergence_mean"])
    assert list(out.index) == ["a", "b", "c"]


def test_summary_thresholds_are_parameters():
    out = summarize(known_table(), pt_threshold=0.3, fid_tolerance=0.5).set_index("method")
    assert out.loc["c", "converged_iteration_mean"] == 2000
    assert out.loc["b", "converged_iteration_mean"] == 1000  # 120 <= 150


def test_summary_orders_the_paper_methods_first(df):
    assert list(summarize(df)["method"]) == list(METHODS)


# --- files and commands ----------------------------------------------------------------------


def test_make_figures_splits_experiments(tmp_path):
    make_runs(tmp_path / "runs", ("tgan",), (0,), target="babies", **SMALL)
    make_runs(tmp_path / "runs", ("tgan",), (0,), target="sketches", **SMALL)
    both = load_trajectories(tmp_path / "runs")
    result = make_figures(both, tmp_path / "out", ["png"])
    names = {p.name for p in result.written}
    assert {"diversity_ffhq-babies-10shot.png", "diversity_ffhq-sketches-10shot.png"} <= names
    assert "samples_ffhq-sketches-10shot.png" in names


def test_plot_command_writes_every_file_it_prints(runs, tmp_path):
    out = tmp_path / "figs"
    result = CliRunner().invoke(app, ["plot", str(runs), "--out", str(out), "--format", "png,pdf"])
    assert result.exit_code == 0, result.output
    printed = [Path(line) for line in result.stdout.splitlines()]
    assert {p.name for p in printed} == {
        f"{name}.{fmt}"
        for name in ("realism", "diversity", "quality_diversity", "replication", "samples")
        for fmt in ("png", "pdf")
    }
    assert all(p.is_file() and p.stat().st_size > 1000 for p in printed)
    assert printed[0].read_bytes()[:4] == b"\x89PNG"


def test_plot_command_rejects_bad_input(runs, tmp_path):
    bad_format = CliRunner().invoke(app, ["plot", str(runs), "--format", "gif"])
    assert bad_format.exit_code == 2 and "png, pdf, svg" in bad_format.output  # bad input
    empty = CliRunner().invoke(app, ["plot", str(tmp_path)])
    assert empty.exit_code == 2 and str(tmp_path) in empty.output


def test_report_command_writes_page_table_and_figures(runs, tmp_path):
    out = tmp_path / "reports" / "demo"
    result = CliRunner().invoke(app, ["report", str(runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("index.html", "summary.csv", "summary.md", "figures/diversity.png"):
        assert (out / name).is_file(), name
    page = (out / "index.html").read_text()
    for src in re.findall(r'src="([^"]+)"', page):
        assert (out / src).is_file(), src
    assert "inception" in page and "vgg" in page and "&quot;fid_n_gen&quot;: 5000" in page
    csv = pd.read_csv(out / "summary.csv")
    assert list(csv["method"]) == list(METHODS) and (csv["n_seeds"] == 3).all()
    table = (out / "summary.md").read_text()
    assert table.count("\n| ffhq → babies") == len(METHODS)
    assert str(out / "index.html") in result.stdout.splitlines()


def test_precision_recall_plane_splits_protocols(tmp_path):
    make_runs(tmp_path, ("tgan", "dcl"), (0,), **SMALL)
    base = load_trajectories(tmp_path)
    with pytest.raises(FigureSkipped, match="precision"):
        plot_precision_recall(base)  # no precision recorded: the figure is left out
    tables = []
    for protocol, shift in (("clean", 0.0), ("dcl-paper", 0.1)):
        t = base.copy()
        t["protocol"] = protocol
        t["run_id"] = t["run_id"] + f"-{protocol}"
        t["precision"] = 0.9 - t["iteration"] / 10_000 - shift
        t["recall"] = 0.5 + t["iteration"] / 20_000 + shift
        tables.append(t)
    fig = plot_precision_recall(pd.concat(tables, ignore_index=True))
    axes = visible_axes(fig)
    assert len(axes) == 2  # one panel per protocol
    assert "clean:" in axes[0].get_xlabel() and "dcl-paper:" in axes[1].get_xlabel()
    assert "recall" in axes[0].get_xlabel() and "precision" in axes[0].get_ylabel()
    assert axes[0].get_ylim() == pytest.approx((-0.02, 1.02))


def test_a_methods_first_stage_is_marked_where_its_last_stage_starts(tmp_path):
    from adaptscope.viz.curves import stage_starts

    df = load_trajectories(make_runs(tmp_path, ("tgan", "adam"), (0, 1), **SMALL))
    probing = (df["method"] == "adam") & (df["iteration"] < 1000 + 500 * df["seed"])
    df["stage"] = np.where(probing, "probe", "adapt")  # seed 0: adapts from 1000, seed 1: 1500
    assert stage_starts(df) == {"adam": 1250.0}  # tgan has one stage: no line
    fig = plot_diversity(df)
    ax = visible_axes(fig)[0]
    verticals = [line for line in ax.get_lines() if list(line.get_xdata()) == [1250.0, 1250.0]]
    assert len(verticals) == 1
    assert to_hex(verticals[0].get_color()) == method_palette(df["method"])["adam"]
    assert "dotted: where a method's last stage begins" in fig.get_suptitle()
    assert "dotted" not in plot_diversity(df.drop(columns="stage")).get_suptitle()


def test_a_legend_with_a_short_last_row_still_reads_along_rows():
    from adaptscope.viz.curves import method_legend
    from adaptscope.viz.style import method_label, ordered_methods

    methods = ["tgan", "tgan_ada", "freezed", "ewc", "cdc", "dcl", "bsa", "minegan", "adam",
               "rick", "mine"]
    fig = Figure(figsize=(9, 3))
    method_legend(fig, methods, method_palette(methods))
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    ncols = legend._ncols
    rows = len(texts) // ncols
    assert rows * ncols == len(texts) and rows > 1  # a full grid: blanks close the last row
    along_rows = [texts[c * rows + r] for r in range(rows) for c in range(ncols)]
    expected = [method_label(m) for m in ordered_methods(methods)]
    assert along_rows[:len(expected)] == expected
    assert all(not t.strip() for t in along_rows[len(expected):])
