"""Comparisons with their uncertainty on trajectories written by hand, where the true difference
between two methods is known by construction: the paired-by-seed difference, its Student-t
interval (recomputed here from the hand-written differences), the pairing itself, runs that never
converged, rank stability, the baseline option and the report's files."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

matplotlib.use("Agg")

from _cli_checks import one_error  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from adaptscope import load_trajectories  # noqa: E402
from adaptscope.cli import app  # noqa: E402
from adaptscope.errors import ConfigError  # noqa: E402
from adaptscope.track.store import append_rows  # noqa: E402
from adaptscope.viz.compare import (  # noqa: E402
    compare,
    paired_differences,
    rank_stability,
)
from adaptscope.viz.report import write_report  # noqa: E402
from adaptscope.viz.summary import per_run  # noqa: E402

SEEDS = (0, 1, 2, 3)
# tgan's final FID varies a lot between seeds; dcl's is tgan's + 10 + a small per-seed noise, so
# the true paired difference is 10 while an unpaired comparison would drown it in the seed spread.
TGAN_FID = {0: 100.0, 1: 140.0, 2: 80.0, 3: 120.0}
FID_NOISE = {0: 0.5, 1: -1.0, 2: 1.5, 3: -0.3}
# final intra-LPIPS: no true difference, noise of both signs around 0
TGAN_LPIPS = {0: 0.40, 1: 0.45, 2: 0.38, 3: 0.42}
LPIPS_NOISE = {0: 0.010, 1: -0.012, 2: 0.004, 3: -0.003}
# realism converged (p_t >= 0.9): dcl never converges in seed 3
TGAN_CONVERGED = {0: 200, 1: 200, 2: 300, 3: 200}
DCL_CONVERGED = {0: 300, 1: 400, 2: 400, 3: None}
# memorised LPIPS: every tgan seed below every dcl seed (tgan dominates)
TGAN_MEMORISED = {0: 0.010, 1: 0.020, 2: 0.015, 3: 0.012}
DCL_MEMORISED = {0: 0.050, 1: 0.060, 2: 0.055, 3: 0.070}


def write_run(root: Path, method: str, seed: int, *, fid: float, lpips: float,
              converged: int | None, memorised: float, target: str = "t") -> None:
    """Full evaluations every 100 iterations to 400, ending at the given final FID, final
    intra-LPIPS (from 0.6 at iteration 0) and memorised LPIPS; p_t 0.95 from `converged` on
    (0.5 throughout if None: realism never converges)."""
    run_id = f"{method}-{target}-s{seed}"
    (root / run_id).mkdir(parents=True)
    rows = []
    for it in range(0, 401, 100):
        pt = 0.5 if converged is None else (0.95 if it >= converged else 0.1)
        rows.append({
            "run_id": run_id, "method": method, "source": "s", "target": target, "shots": 10,
            "seed": seed, "iteration": it, "images_seen": it * 4, "wall_time_s": float(it),
            "evaluation": "full", "realism_pt": pt, "nearest_shot_lpips": 0.5 - it / 4000,
            "memorised_lpips": memorised, "lpips_backbone": "vgg",
            "fid": fid + (400 - it), "fid_backbone": "inception", "fid_n_gen": 5000,
            "intra_lpips": 0.6 + (lpips - 0.6) * it / 400, "intra_lpips_std": 0.01,
        })
    append_rows(root / run_id, rows, config={}, protocol={})


def write_tgan(root: Path, seeds=SEEDS) -> None:
    for s in seeds:
        write_run(root, "tgan", s, fid=TGAN_FID[s], lpips=TGAN_LPIPS[s],
                  converged=TGAN_CONVERGED[s], memorised=TGAN_MEMORISED[s])


def write_dcl(root: Path, seeds=SEEDS) -> None:
    for s in seeds:
        write_run(root, "dcl", s, fid=TGAN_FID[s] + 10 + FID_NOISE[s],
                  lpips=TGAN_LPIPS[s] + LPIPS_NOISE[s], converged=DCL_CONVERGED[s],
                  memorised=DCL_MEMORISED[s])


def t_interval_by_hand(differences: list[float]) -> tuple[float, float, float]:
    d = np.array(differences)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def row(table: pd.DataFrame, quantity: str, a: str, b: str) -> pd.Series:
    hit = table[(table["quantity"] == quantity) & (table["method_a"] == a)
                & (table["method_b"] == b)]
    assert len(hit) == 1, hit
    return hit.iloc[0]


@pytest.fixture
def two_methods(tmp_path) -> pd.DataFrame:
    write_tgan(tmp_path)
    write_dcl(tmp_path)
    return per_run(load_trajectories(tmp_path))


def test_a_true_difference_of_10_is_found_with_the_t_interval_of_the_paired_differences(
        two_methods):
    r = row(paired_differences(two_methods), "final_fid", "tgan", "dcl")
    differences = [10 + FID_NOISE[s] for s in SEEDS]  # dcl − tgan, seed by seed
    mean, low, high = t_interval_by_hand(differences)
    assert r["n_pairs"] == 4
    assert r["mean_b_minus_a"] == pytest.approx(mean) and mean == pytest.approx(10.175)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert bool(r["excludes_0"])  # bool(pd.NA) would raise
    assert low > 0 and r["better"] == "lower"
    assert r["mean_a"] == pytest.approx(np.mean(list(TGAN_FID.values())))


def test_no_true_difference_gives_an_interval_that_includes_0(two_methods):
    r = row(paired_differences(two_methods), "final_intra_lpips", "tgan", "dcl")
    mean, low, high = t_interval_by_hand([LPIPS_NOISE[s] for s in SEEDS])
    assert r["n_pairs"] == 4 and r["mean_b_minus_a"] == pytest.approx(mean)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert r["ci_low"] < 0 < r["ci_high"] and not r["excludes_0"]
    assert r["better"] == "higher"


def test_a_run_that_never_converged_drops_out_of_its_pair(two_methods):
    r = row(paired_differences(two_methods), "converged_iteration", "tgan", "dcl")
    usable = [s for s in SEEDS if DCL_CONVERGED[s] is not None]
    assert usable == [0, 1, 2]
    mean, low, high = t_interval_by_hand(
        [DCL_CONVERGED[s] - TGAN_CONVERGED[s] for s in usable])  # 100, 200, 100
    assert r["n_pairs"] == 3 and r["mean_b_minus_a"] == pytest.approx(mean)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    # the other quantities of dcl's seed 3 still pair
    assert row(paired_differences(two_methods), "final_fid", "tgan", "dcl")["n_pairs"] == 4


def test_runs_pair_by_seed_number_and_a_seed_one_method_lacks_is_dropped(tmp_path):
    write_tgan(tmp_path)  # seeds 0-3
    # cdc: tgan's FID + 20 + noise in seeds 0-2, no seed 3, and a seed 4 far off that tgan lacks
    noise = {0: 1.0, 1: -2.0, 2: 0.5}
    for s, n in noise.items():
        write_run(tmp_path, "cdc", s, fid=TGAN_FID[s] + 20 + n, lpips=0.4, converged=200,
                  memorised=0.01)
    write_run(tmp_path, "cdc", 4, fid=1000.0, lpips=0.4, converged=200, memorised=0.01)
    r = row(paired_differences(per_run(load_trajectories(tmp_path))), "final_fid", "tgan", "cdc")
    mean, low, high = t_interval_by_hand([20 + noise[s] for s in (0, 1, 2)])
    assert r["n_pairs"] == 3 and r["mean_b_minus_a"] == pytest.approx(mean)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert r["mean_a"] == pytest.approx(np.mean([TGAN_FID[s] for s in (0, 1, 2)]))


def test_a_single_pair_has_a_difference_but_no_interval(tmp_path):
    write_tgan(tmp_path, seeds=(0, 1))
    write_dcl(tmp_path, seeds=(1, 2))
    r = row(paired_differences(per_run(load_trajectories(tmp_path))), "final_fid", "tgan", "dcl")
    assert r["n_pairs"] == 1 and r["mean_b_minus_a"] == pytest.approx(10 + FID_NOISE[1])
    assert math.isnan(r["ci_low"]) and math.isnan(r["ci_high"]) and r["excludes_0"] is pd.NA


def test_only_runs_of_one_experiment_are_paired(tmp_path):
    write_tgan(tmp_path)
    for s in SEEDS:  # dcl on another target: nothing to pair with
        write_run(tmp_path, "dcl", s, fid=50.0, lpips=0.4, converged=200, memorised=0.01,
                  target="u")
    runs = per_run(load_trajectories(tmp_path))
    assert paired_differences(runs).empty and rank_stability(runs).empty


def test_a_method_better_in_every_seed_holds_its_rank_in_every_resample(two_methods):
    ranks = rank_stability(two_methods).set_index(["quantity", "method"])
    # memorisation: every tgan seed below every dcl seed, lower is better
    assert ranks.loc[("final_memorised_lpips", "tgan"), "rank"] == 1
    assert ranks.loc[("final_memorised_lpips", "dcl"), "rank"] == 2
    assert ranks.loc[("final_memorised_lpips", "tgan"), "rank_held"] == 1.0
    assert ranks.loc[("final_memorised_lpips", "dcl"), "rank_held"] == 1.0
    # FID: dcl is worse by 10 in every seed, but tgan's seeds spread over 60, so resampling
    # each method's seeds independently swaps them now and then
    held = ranks.loc[("final_fid", "tgan"), "rank_held"]
    assert ranks.loc[("final_fid", "tgan"), "rank"] == 1 and 0.5 < held < 1.0
    # intra-LPIPS: higher is better
    means = {m: ranks.loc[("final_intra_lpips", m), "mean"] for m in ("tgan", "dcl")}
    best = max(means, key=means.get)
    assert ranks.loc[("final_intra_lpips", best), "rank"] == 1
    # converged: the mean over the seeds that converged (dcl: 3 of 4)
    assert ranks.loc[("converged_iteration", "dcl"), "n_seeds"] == 3
    # a fixed generator seed: the same numbers every time
    pd.testing.assert_frame_equal(rank_stability(two_methods), rank_stability(two_methods))


def test_a_baseline_compares_each_method_with_it(tmp_path):
    write_tgan(tmp_path)
    write_dcl(tmp_path)
    for s in SEEDS:
        write_run(tmp_path, "cdc", s, fid=TGAN_FID[s] + 5, lpips=0.4, converged=200,
                  memorised=0.01)
    runs = per_run(load_trajectories(tmp_path))
    every = paired_differences(runs)
    assert {(a, b) for a, b in zip(every["method_a"], every["method_b"], strict=True)} == {
        ("tgan", "cdc"), ("tgan", "dcl"), ("cdc", "dcl")}
    against = compare(runs, baseline="dcl")
    assert {(a, b) for a, b in zip(against["method_a"], against["method_b"], strict=True)} == {
        ("dcl", "tgan"), ("dcl", "cdc")}
    r = row(against, "final_fid", "dcl", "tgan")  # tgan − dcl: the sign turns
    mean, low, high = t_interval_by_hand([-(10 + FID_NOISE[s]) for s in SEEDS])
    assert r["mean_b_minus_a"] == pytest.approx(mean) and r["ci_high"] == pytest.approx(high)
    assert r["rank_a"] == 3 and r["rank_b"] == 1  # final FID: tgan < cdc < dcl in every seed
    with pytest.raises(ConfigError, match=r"baseline 'ewc' .* \(tgan, cdc, dcl\)"):
        paired_differences(runs, baseline="ewc")


def test_the_report_writes_the_comparison_and_refuses_an_unknown_baseline(tmp_path):
    runs_dir, out = tmp_path / "runs", tmp_path / "report"
    write_tgan(runs_dir)
    write_dcl(runs_dir)
    result = CliRunner().invoke(app, ["report", str(runs_dir), "--out", str(out),
                                      "--baseline", "tgan"])
    assert result.exit_code == 0, result.output
    for name in ("comparison.csv", "comparison.md"):
        assert (out / name).is_file() and str(out / name) in result.stdout.splitlines()
    table = pd.read_csv(out / "comparison.csv")
    fid = row(table, "final_fid", "tgan", "dcl")
    assert fid["mean_b_minus_a"] == pytest.approx(np.mean([10 + FID_NOISE[s] for s in SEEDS]))
    page = (out / "index.html").read_text()
    assert "<h2>Comparisons</h2>" in page and "Student-t 95%" in page
    assert "paired by seed" in page and "Excludes 0" in page and "resamples" in page
    md = (out / "comparison.md").read_text()
    assert "each method against tgan" in md and "## Rank stability" in md

    bad = CliRunner().invoke(app, ["report", str(runs_dir), "--out", str(tmp_path / "bad"),
                                   "--baseline", "ewc"])
    line = one_error(bad)
    assert "'ewc'" in line and "tgan, dcl" in line
    assert not (tmp_path / "bad").exists()

    again = write_report(runs_dir, out)  # no baseline: every pair, the same one here
    assert again.comparison_csv.is_file()
