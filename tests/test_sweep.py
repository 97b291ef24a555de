"""Sweeps: `--grid` and `[grid]` expanded into variants, their runs named by them, resumed, and
reported side by side with values computed here from hand-written trajectories."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from _tiny_world import run_crashing_at, write_experiment
from typer.testing import CliRunner

matplotlib.use("Agg")

from adaptscope import load_trajectories  # noqa: E402
from adaptscope.cli import app  # noqa: E402
from adaptscope.config import RawValue  # noqa: E402
from adaptscope.errors import ConfigError  # noqa: E402
from adaptscope.track.rundir import RunDir  # noqa: E402
from adaptscope.track.store import append_rows  # noqa: E402
from adaptscope.train import runner as run_plan  # noqa: E402
from adaptscope.train.experiment import load_sweep, run_specs  # noqa: E402
from adaptscope.train.sweep import parse_grid_options, parse_grid_table, variants  # noqa: E402
from adaptscope.viz.style import method_label, ordered_methods  # noqa: E402
from adaptscope.viz.summary import summarize  # noqa: E402

cli = CliRunner()


# --- expansion --------------------------------------------------------------------------------


def _labels(grids, methods):
    return [(label, runs) for label, _, runs in variants(grids, methods)]


def test_a_method_setting_makes_variants_of_that_method_only():
    grids = parse_grid_options(["ewc.lam=10,100"])
    assert _labels(grids, ["tgan", "ewc"]) == [(None, ["tgan"]), ("ewc.lam=10", ["ewc"]),
                                                ("ewc.lam=100", ["ewc"])]


def test_options_multiply_and_shared_settings_vary_every_method():
    grids = parse_grid_options(["train.lr=0.002,0.001", "ewc.lam=1,2"])
    assert _labels(grids, ["tgan", "ewc"]) == [
        ("train.lr=0.002", ["tgan"]), ("train.lr=0.001", ["tgan"]),
        ("train.lr=0.002, ewc.lam=1", ["ewc"]), ("train.lr=0.002, ewc.lam=2", ["ewc"]),
        ("train.lr=0.001, ewc.lam=1", ["ewc"]), ("train.lr=0.001, ewc.lam=2", ["ewc"])]


def test_grid_tables_add_up_nested_or_dotted():
    grids = parse_grid_table([{"dcl": {"patch_scheme": [True, False]}},
                              {"dcl.d_features": ["blocks"]}], "s.toml")
    labels = _labels(grids, ["dcl"])
    assert labels == [("dcl.patch_scheme=true", ["dcl"]), ("dcl.patch_scheme=false", ["dcl"]),
                      ("dcl.d_features=blocks", ["dcl"])]
    one = parse_grid_table({"ewc": {"lam": [10.0, 100.0]}}, "s.toml")
    assert [s for _, s, _ in variants(one, ["ewc"])] == [{"ewc.lam": 10.0}, {"ewc.lam": 100.0}]


@pytest.mark.parametrize(("grid", "words"), [
    (["seeds=0,1"], "--seeds"),
    (["methods=tgan,cdc"], "--methods"),
    (["dcl.tau=0.1,0.2"], "does not run"),
    (["ewc.lam=10,10"], "more than once"),
])
def test_a_grid_that_cannot_make_variants_is_refused(grid, words):
    with pytest.raises(ConfigError, match=words):
        variants(parse_grid_options(grid), ["tgan", "ewc"])


@pytest.mark.parametrize("item", ["ewc.lam", "ewc.lam=", "=1,2", "ewc.lam=1,,2"])
def test_a_malformed_grid_option_names_the_form(item):
    with pytest.raises(ConfigError, match="KEY=V1,V2"):
        parse_grid_options([item])


@pytest.mark.parametrize("table", [{"ewc": {"lam": []}}, {"ewc.lam": 10.0}, {}])
def test_a_grid_table_without_value_lists_is_refused(table):
    with pytest.raises(ConfigError, match="s.toml"):
        parse_grid_table(table, "s.toml")


def test_grid_values_are_typed_by_the_setting_and_named_in_the_run_id():
    configs = load_sweep(None, ["methods=[\"tgan\",\"ewc\"]", "seeds=[0,1]"],
                         grid=["ewc.lam=10,1e3"])
    specs = [s for cfg in configs for s in run_specs(cfg)]
    assert [s.run_id for s in specs] == [
        "embedded-default-sunglasses-tgan-s0", "embedded-default-sunglasses-tgan-s1",
        "embedded-default-sunglasses-ewc-ewc.lam-10-s0",
        "embedded-default-sunglasses-ewc-ewc.lam-10-s1",
        "embedded-default-sunglasses-ewc-ewc.lam-1e3-s0",
        "embedded-default-sunglasses-ewc-ewc.lam-1e3-s1"]
    lams = [s.method_params["lam"] for s in specs if s.method == "ewc"]
    assert lams == [10.0, 10.0, 1000.0, 1000.0] and all(isinstance(v, float) for v in lams)
    assert "variant" not in specs[0].to_dict()  # a run outside the sweep writes what it wrote


def test_a_bad_grid_value_names_the_option():
    with pytest.raises(ConfigError, match="--grid ewc.lam=ten"):
        load_sweep(None, ["methods=[\"ewc\"]"], grid=["ewc.lam=ten"])


def test_the_toml_grid_runs_unless_the_command_line_gives_one(tmp_path):
    exp = tmp_path / "e.toml"
    exp.write_text('methods = ["ewc"]\n[grid.ewc]\nlam = [1.0, 2.0]\n')
    assert [c.variant for c in load_sweep(exp)] == ["ewc.lam=1.0", "ewc.lam=2.0"]
    assert [c.variant for c in load_sweep(exp, grid=["ewc.lam=5"])] == ["ewc.lam=5"]
    assert isinstance(parse_grid_options(["ewc.lam=5"])[0]["ewc.lam"][0], RawValue)


# --- figures and tables -----------------------------------------------------------------------


def test_variants_are_ordered_by_their_values_after_their_method():
    names = ["ewc [ewc.lam=1e3]", "ewc [ewc.lam=100.0]", "zzz", "ewc [ewc.lam=10.0]", "tgan"]
    assert ordered_methods(names) == ["tgan", "ewc [ewc.lam=10.0]", "ewc [ewc.lam=100.0]",
                                      "ewc [ewc.lam=1e3]", "zzz"]
    assert method_label("ewc [ewc.lam=10.0]") == "EWC [lam=10.0]"
    assert method_label("ewc [train.lr=0.1, ewc.lam=1]") == "EWC [train.lr=0.1, lam=1]"
    assert method_label("dcl [ewc.lam=1]") == "DCL [ewc.lam=1]"


def test_a_methods_variants_run_along_one_colour_map_with_its_marker():
    import matplotlib as mpl

    from adaptscope.viz.style import method_marker, method_palette

    names = ["tgan", "ewc [ewc.lam=100]", "ewc [ewc.lam=0]", "ewc [ewc.lam=10]"]
    palette = method_palette(names)
    ramp = mpl.colormaps["viridis"]
    expected = [mpl.colors.to_hex(ramp(x)) for x in (0.0, 0.425, 0.85)]  # ends and middle
    assert [palette[f"ewc [ewc.lam={v}]"] for v in (0, 10, 100)] == expected
    assert palette["tgan"] == method_palette(["tgan"])["tgan"]
    assert method_marker("ewc [ewc.lam=0]") == method_marker("ewc") != method_marker("tgan")


# (iteration, evaluation, p_t, intra-LPIPS) per (variant, seed); cheap rows lack LPIPS
ROWS = {
    ("dcl.x=a", 0): [(0, "full", 0.50, 0.60), (50, "cheap", 0.92, None), (100, "full", 0.95, 0.45)],
    ("dcl.x=a", 1): [(0, "full", 0.50, 0.50), (50, "cheap", 0.85, None), (100, "full", 0.91, 0.40)],
    ("dcl.x=b", 0): [(0, "full", 0.50, 0.60), (100, "full", 0.80, 0.60)],
    (None, 0): [(0, "full", 0.50, 0.60), (100, "full", 0.90, 0.30)],
}


def _write_runs(folder: Path) -> None:
    for (variant, seed), rows in ROWS.items():
        run_id = f"e-t-dcl{'-' + variant if variant else ''}-s{seed}"
        (folder / run_id).mkdir(parents=True)
        append_rows(folder / run_id, [
            {"run_id": run_id, "method": "dcl", "variant": variant, "source": "s", "target": "t",
             "shots": 10, "seed": seed, "iteration": it, "images_seen": 4 * it,
             "evaluation": kind, "realism_pt": pt, "intra_lpips": lpips,
             "fid": None if lpips is None else 100.0 - it / 10}
            for it, kind, pt, lpips in rows], config={"method": "dcl"}, protocol={})


def test_the_summary_gives_each_variant_its_own_row(tmp_path):
    _write_runs(tmp_path)
    summary = summarize(load_trajectories(tmp_path)).set_index("method")
    assert list(summary.index) == ["dcl", "dcl [dcl.x=a]", "dcl [dcl.x=b]"]
    a = summary.loc["dcl [dcl.x=a]"]
    # p_t >= 0.9 first at 50 (a cheap row) and at 100: mean 75, sample std 25 * sqrt(2)
    assert a["converged_iteration_mean"] == pytest.approx(75.0)
    assert a["converged_iteration_std"] == pytest.approx(25 * np.sqrt(2))
    # diversity lost (0.60 - 0.45) / 0.60 = 0.25 and (0.50 - 0.40) / 0.50 = 0.20
    assert a["relative_diversity_loss_mean"] == pytest.approx(0.225)
    assert a["final_realism_pt_mean"] == pytest.approx(0.93)
    b, plain = summary.loc["dcl [dcl.x=b]"], summary.loc["dcl"]
    assert np.isnan(b["converged_iteration_mean"]) and b["relative_diversity_loss_mean"] == 0
    assert plain["converged_iteration_mean"] == 100 and plain["n_seeds"] == 1


def test_the_report_shows_the_variants_side_by_side(tmp_path):
    _write_runs(tmp_path / "runs")
    result = cli.invoke(app, ["report", str(tmp_path / "runs"), "--out", str(tmp_path / "r"),
                              "--baseline", "dcl [dcl.x=b]"])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "r" / "summary.md").read_text()
    assert "| DCL [x=a] | 2 |" in table and "| DCL [x=b] | 1 |" in table
    comparison = pd.read_csv(tmp_path / "r" / "comparison.csv")
    assert set(comparison["method_a"]) == {"dcl [dcl.x=b]"}


# --- runs -------------------------------------------------------------------------------------


def test_a_grid_runs_every_variant_and_resumes_an_interrupted_one(tmp_path, source_checkpoint):
    exp = write_experiment(tmp_path / "e.toml", source_checkpoint, iterations=4, eval_every=2)
    args = ["run", "--config", str(exp), "--methods", "tgan,ewc", "--seeds", "0",
            "--set", "ewc.n_fisher=4", "--grid", "ewc.lam=10,100", "--workers", "1"]
    done = cli.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert done.exit_code == 0, done.output
    df = load_trajectories(tmp_path / "a")
    assert sorted(df["run_id"].unique()) == ["cli-sunglasses-ewc-ewc.lam-10-s0",
                                             "cli-sunglasses-ewc-ewc.lam-100-s0",
                                             "cli-sunglasses-tgan-s0"]
    by_run = df.groupby("run_id")["variant"].first()
    assert by_run["cli-sunglasses-ewc-ewc.lam-10-s0"] == "ewc.lam=10"
    assert pd.isna(by_run["cli-sunglasses-tgan-s0"])
    config = (tmp_path / "a" / "cli-sunglasses-ewc-ewc.lam-10-s0" / "config.toml").read_text()
    assert 'variant = "ewc.lam=10"' in config and "lam = 10.0" in config
    # The same sweep, one variant's run crashed after iteration 1: --resume finishes it
    planned = run_plan.plan_experiment(
        load_sweep(exp, ["ewc.n_fisher=4", 'methods=["tgan","ewc"]'], grid=["ewc.lam=10,100"]),
        tmp_path / "b")
    crashed = next(r for r in planned if r.spec.variant == "ewc.lam=100")
    run_crashing_at(crashed.spec, crashed.run_dir, 1)
    run_plan.record_configs(planned)
    resumed = cli.invoke(app, ["run", "--resume", "--out", str(tmp_path / "b")])
    assert resumed.exit_code == 0, resumed.output
    assert all(RunDir(r.run_dir).is_done() for r in planned)
    columns = ["run_id", "variant", "iteration", "fid", "intra_lpips", "realism_pt"]
    pd.testing.assert_frame_equal(
        load_trajectories(tmp_path / "b")[columns].sort_values(["run_id", "iteration"])
        .reset_index(drop=True),
        df[columns].sort_values(["run_id", "iteration"]).reset_index(drop=True))


def test_resume_takes_no_grid(tmp_path):
    result = cli.invoke(app, ["run", "--resume", "--out", str(tmp_path), "--grid", "ewc.lam=1"])
    assert result.exit_code != 0 and "--grid" in result.output


def test_a_long_variant_is_cut_and_told_apart_by_a_digest():
    from adaptscope.spec import VARIANT_SLUG_MAX, RunSpec

    long_a, long_b = "x.a=" + "v" * 300 + "1", "x.a=" + "v" * 300 + "2"
    ids = [RunSpec(experiment="e", method="m", seed=0, variant=v).run_id for v in (long_a,
                                                                                 long_b)]
    assert ids[0] != ids[1] and all(len(i) < len("e-sunglasses-m--s0") + VARIANT_SLUG_MAX + 1
                                    for i in ids)
    short = RunSpec(experiment="e", method="m", seed=0, variant="ewc.lam=10").run_id
    assert short == "e-sunglasses-m-ewc.lam-10-s0"


def test_grid_values_that_differ_only_in_punctuation_are_refused(tmp_path):
    result = cli.invoke(app, ["run", "--methods", "tgan", "--out", str(tmp_path),
                              "--grid", "target.name=a b,a-b"])
    assert result.exit_code == 2 and "grid values that differ" in result.output


def test_a_sample_rows_label_puts_each_setting_on_its_own_line():
    from adaptscope.viz.samples import row_label

    assert row_label("dcl [dcl.patch_scheme=true, dcl.d_term_minimized_by=both]") == \
        "DCL\npatch_scheme=true,\nd_term_minimized_by=both"
    assert row_label("tgan") == "TGAN"
