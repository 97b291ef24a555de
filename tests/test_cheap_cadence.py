"""Cheap evaluations at their own cadence (`schedule.cheap_every`): p_t and the nearest-shot
LPIPS between the full evaluations, on the first fixed samples, without changing training, kept
apart by the `evaluation` column, resumed like every other row, and drawn densely."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from _tiny_world import CH, METRIC_COLUMNS, run_crashing_at, tiny_spec  # noqa: E402

from adaptscope import load_trajectories  # noqa: E402
from adaptscope.embedded.toynet import load_toynet  # noqa: E402
from adaptscope.errors import ConfigError  # noqa: E402
from adaptscope.images import from_uint8, to_uint8  # noqa: E402
from adaptscope.models import (  # noqa: E402
    Discriminator,
    FixedLatents,
    Generator,
    load_checkpoint,
    save_checkpoint,
)
from adaptscope.spec import MetricsSpec, ScheduleSpec  # noqa: E402
from adaptscope.track import rundir  # noqa: E402
from adaptscope.track.evaluate import EVAL_SEED_OFFSET, Evaluator  # noqa: E402
from adaptscope.track.store import append_rows, read_metadata  # noqa: E402
from adaptscope.track.target import load_target  # noqa: E402
from adaptscope.train.experiment import load_experiment  # noqa: E402
from adaptscope.train.loop import run_adaptation  # noqa: E402
from adaptscope.viz import plot_realism, plot_replication, summarize  # noqa: E402

NOT_MEASURED_CHEAPLY = ["fid", "fid_backbone", "fid_n_gen", "intra_lpips", "intra_lpips_std",
                        "gt_coverage", "gt_replication", "gt_shot_agreement"]


def cheap_spec(source: Path, cheap_every: int = 2, iterations: int = 6, eval_every: int = 3,
               **changes):
    """The tiny world with full evaluations every `eval_every` and cheap ones every
    `cheap_every`."""
    return tiny_spec(source, schedule=ScheduleSpec(iterations=iterations, eval_every=eval_every,
                                                   cheap_every=cheap_every), **changes)


def noisy_source(path: Path) -> Path:
    """The tiny source with its noise maps switched on (noise strengths start at 0 in
    StyleGAN2), so that measuring other noise maps than the fixed ones shows."""
    torch.manual_seed(0)
    g, d = Generator(16, 32, 2, channels=CH), Discriminator(16, channels=CH)
    with torch.no_grad():
        for name, param in g.named_parameters():
            if name.endswith("noise.weight"):
                param.fill_(1.0)
    save_checkpoint(path, g_ema=g, g=g, d=d)
    return path


def all_but_wall_time(run_dir: Path) -> pd.DataFrame:
    """Every column of a trajectory except the one that depends on the machine's speed."""
    return load_trajectories(run_dir).drop(columns="wall_time_s")


# --- the schedule ------------------------------------------------------------------------------


def test_cheap_points_are_the_multiples_that_are_not_full_points():
    schedule = ScheduleSpec(iterations=10, eval_every=4, cheap_every=3)
    assert schedule.evaluation_points() == [0, 4, 8, 10]
    assert schedule.cheap_points() == [3, 6, 9]
    assert ScheduleSpec(iterations=10, eval_every=4, cheap_every=2).cheap_points() == [2, 6]
    assert ScheduleSpec(iterations=10, eval_every=4).cheap_points() == []  # 0: off


@pytest.mark.parametrize("key,value", [("schedule.cheap_every", "-1"),
                                       ("metrics.cheap_n_samples", "1")])
def test_cheap_settings_out_of_range_are_named(key, value):
    with pytest.raises(ConfigError, match=f"^{key} = .* is not allowed"):
        load_experiment(None, [f"{key}={value}"])
    load_experiment(None, ["schedule.cheap_every=0", "metrics.cheap_n_samples=2"])


def test_the_embedded_default_has_a_cheap_cadence():
    cfg = load_experiment(None)
    assert cfg.schedule.cheap_every == 25 and cfg.metrics.cheap_n_samples == 50
    assert len(cfg.schedule.cheap_points()) == 30


# --- rows ----------------------------------------------------------------------------------


def test_cheap_rows_appear_between_the_full_ones(source_checkpoint, tmp_path):
    events: list[dict] = []
    run_dir = run_adaptation(cheap_spec(source_checkpoint), tmp_path / "run",
                             on_event=events.append)
    df = load_trajectories(run_dir)
    assert df["iteration"].tolist() == [0, 2, 3, 4, 6]
    assert df["evaluation"].tolist() == ["full", "cheap", "full", "cheap", "full"]
    assert df["images_seen"].tolist() == [0, 8, 12, 16, 24]

    cheap, full = df[df["evaluation"] == "cheap"], df[df["evaluation"] == "full"]
    assert cheap[NOT_MEASURED_CHEAPLY].isna().all().all()
    assert cheap[["realism_pt", "nearest_shot_lpips"]].notna().all().all()
    assert (cheap["lpips_backbone"] == "toy").all()  # names the instrument of its LPIPS
    assert full[[*NOT_MEASURED_CHEAPLY, "realism_pt", "nearest_shot_lpips"]].notna().all().all()
    assert cheap["loss_g_adv"].notna().all()  # the loop's means since the previous row

    # No sample grid and no checkpoint at a cheap point.
    for it in (2, 4):
        assert not (run_dir / rundir.sample_file(it, "npy")).exists()
        assert not (run_dir / rundir.sample_file(it, "png")).exists()
    assert (run_dir / rundir.sample_file(3, "npy")).exists()
    assert [(e["kind"], e["iteration"]) for e in events if e["kind"] in ("eval", "cheap")] == [
        ("eval", 0), ("cheap", 2), ("eval", 3), ("cheap", 4), ("eval", 6)]

    protocol = read_metadata(run_dir)["protocol"]
    assert protocol["schedule"] == {"iterations": 6, "eval_every": 3, "cheap_every": 2}
    assert "evaluation_iterations" not in protocol  # the rule, never the list of points
    assert protocol["cheap_n_samples"] == 24  # 200 asked, the full evaluation draws 24

    assert load_trajectories(run_dir, evaluation="full")["iteration"].tolist() == [0, 3, 6]
    assert load_trajectories(run_dir, evaluation="cheap")["iteration"].tolist() == [2, 4]
    with pytest.raises(ValueError, match="evaluation must be one of"):
        load_trajectories(run_dir, evaluation="dense")


def test_a_cheap_row_measures_the_first_fixed_samples(tmp_path, monkeypatch):
    """p_t and the nearest-shot LPIPS of a cheap row, recomputed from the generator it measured:
    the first `cheap_n_samples` (15: one whole batch of 12, and 3 of the next) of the fixed
    latents and noise, scored by the toy net directly."""
    seen: dict[int, torch.nn.Module] = {}
    real = Evaluator.evaluate_cheap

    def keep_generator(self, g_ema):
        seen[len(seen)] = copy.deepcopy(g_ema)
        return real(self, g_ema)

    monkeypatch.setattr(Evaluator, "evaluate_cheap", keep_generator)
    spec = cheap_spec(noisy_source(tmp_path / "noisy.pt"), cheap_every=1, iterations=2,
                      eval_every=2)
    spec = replace(spec, metrics=replace(spec.metrics, cheap_n_samples=15))
    row = load_trajectories(run_adaptation(spec, tmp_path / "run")).set_index("iteration").loc[1]
    assert row["evaluation"] == "cheap" and len(seen) == 1

    g = seen[0].eval()
    m = spec.metrics
    with torch.no_grad():
        latents = FixedLatents(g, spec.seed + EVAL_SEED_OFFSET)
        images = [g([z], noise=noise)[0] for z, noise in latents.batches(
            max(m.fid_n_gen, m.lpips_n_samples, m.n_grid), m.batch_size)]
        x = from_uint8(to_uint8(torch.cat(images)))[:15]
        net = load_toynet()
        expected_pt = net.p_target(x, "sunglasses").double().mean().item()
        shots = load_target("toyfaces:sunglasses", 16, 10, 0).shots
        to_shot = torch.stack([net.lpips_distance(x, s.expand_as(x)) for s in shots], dim=1)
        expected_nearest = to_shot.min(dim=1).values.double().mean().item()
    assert row["realism_pt"] == pytest.approx(expected_pt, rel=1e-5)
    assert row["nearest_shot_lpips"] == pytest.approx(expected_nearest, rel=1e-5)


def test_on_the_same_samples_cheap_and_full_measure_the_same(source_checkpoint):
    """All 20 samples in both: the cheap evaluation's p_t and nearest-shot LPIPS are exactly the
    full evaluation's, and measuring draws nothing from the global RNG."""
    g = load_checkpoint(source_checkpoint).g_ema.eval()
    target = load_target("toyfaces:sunglasses", g.size, 10, 0)
    metrics = MetricsSpec(fid_backbone="toy", fid_n_gen=20, lpips_backbone="toy",
                          lpips_n_samples=20, cheap_n_samples=500, realism="toy",
                          ground_truth=False, n_grid=4, batch_size=12)
    evaluator = Evaluator(metrics, target, seed=3)
    assert evaluator.cheap_n_samples == 20  # never more than the full evaluation draws
    full = evaluator.evaluate(g).metrics
    before = torch.get_rng_state()
    cheap = evaluator.evaluate_cheap(g)
    assert torch.equal(torch.get_rng_state(), before)
    assert cheap["realism_pt"] == full["realism_pt"]
    assert cheap["nearest_shot_lpips"] == full["nearest_shot_lpips"]
    assert cheap["gu_memorised_lpips"] == full["gu_memorised_lpips"]
    assert set(cheap) == {"protocol", "realism_pt", "nearest_shot_lpips", "memorised_lpips",
                          "gu_memorised_lpips", "lpips_backbone"}


# --- training and resume -----------------------------------------------------------------------


def test_cheap_evaluations_do_not_change_training(source_checkpoint, tmp_path):
    plain = run_adaptation(cheap_spec(source_checkpoint, cheap_every=0), tmp_path / "plain")
    dense = run_adaptation(cheap_spec(source_checkpoint, cheap_every=1), tmp_path / "dense")
    assert len(load_trajectories(dense, evaluation="cheap")) == 4  # 1, 2, 4, 5
    pd.testing.assert_frame_equal(
        load_trajectories(dense, evaluation="full")[METRIC_COLUMNS],
        load_trajectories(plain)[METRIC_COLUMNS])
    a = load_checkpoint(plain / rundir.CHECKPOINT_FILE).g_ema.state_dict()
    b = load_checkpoint(dense / rundir.CHECKPOINT_FILE).g_ema.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_crash_after_cheap_rows_resumes_to_the_uninterrupted_rows(source_checkpoint,
                                                                    tmp_path):
    """Killed after the cheap rows at 4 and 5 were recorded, past the checkpoint at 3: the
    resumed run keeps them, and its row at 6 averages the losses of iteration 5 only, as the
    uninterrupted run's does."""

    spec = cheap_spec(source_checkpoint, cheap_every=1)
    uninterrupted = all_but_wall_time(run_adaptation(spec, tmp_path / "uninterrupted"))

    run_crashing_at(spec, tmp_path / "crashed", 5)
    assert load_trajectories(tmp_path / "crashed")["iteration"].tolist() == [0, 1, 2, 3, 4, 5]
    run_adaptation(spec, tmp_path / "crashed")
    pd.testing.assert_frame_equal(all_but_wall_time(tmp_path / "crashed"), uninterrupted)


# --- figures and summaries -------------------------------------------------------------------


def dense_run(root: Path, method: str, cross: int) -> Path:
    """A run with full rows every 100 iterations and cheap rows every 25, whose p_t first
    reaches 0.9 at iteration `cross` (a cheap point)."""
    run_dir = root / method
    run_dir.mkdir(parents=True)
    rows = []
    for it in range(0, 401, 25):
        full = it % 100 == 0
        row = {"run_id": method, "method": method, "source": "s", "target": "t", "shots": 10,
               "seed": 0, "iteration": it, "images_seen": it * 4, "wall_time_s": float(it),
               "evaluation": "full" if full else "cheap",
               "realism_pt": 0.95 if it >= cross else it / (cross * 1.2),
               "nearest_shot_lpips": 0.5 - it / 2000, "lpips_backbone": "vgg"}
        if full:
            row.update(fid=200.0 - it / 4, fid_backbone="inception", fid_n_gen=5000,
                       intra_lpips=0.6 - it / 4000, intra_lpips_std=0.01)
        rows.append(row)
    append_rows(run_dir, rows, config={}, protocol={})
    return run_dir


def test_p_t_is_dense_and_fid_and_lpips_take_the_full_rows(tmp_path):
    dense_run(tmp_path, "tgan", cross=225)
    dense_run(tmp_path, "cdc", cross=350)
    df = load_trajectories(tmp_path)

    summary = summarize(df).set_index("method")
    assert summary.loc["tgan", "converged_iteration_mean"] == 225  # a cheap point
    assert summary.loc["cdc", "converged_iteration_mean"] == 350
    # LPIPS at convergence: linear between the full rows around it (200 and 300)
    assert summary.loc["tgan", "intra_lpips_at_convergence_mean"] == pytest.approx(
        0.6 - 225 / 4000)
    assert summary.loc["tgan", "final_fid_mean"] == pytest.approx(100)

    fid_ax, pt_ax = [ax for ax in plot_realism(df).axes if ax.get_visible()]
    for line in fid_ax.get_lines():
        assert list(line.get_xdata()) == [0, 100, 200, 300, 400]
    for line in pt_ax.get_lines():
        xs = list(line.get_xdata())
        assert xs == list(range(0, 401, 25))
        marked = [x for x, on in zip(xs, line.get_markevery(), strict=True) if on]
        assert marked == [0, 100, 200, 300, 400]  # markers at the full evaluations only

    replication = [ax for ax in plot_replication(df).axes if ax.get_visible()]
    assert len(replication) == 1  # cheap and full nearest-shot values share their panel
    assert all(len(line.get_xdata()) == 17 for line in replication[0].get_lines())


def test_a_table_without_cheap_rows_is_drawn_as_before(tmp_path):
    run_dir = dense_run(tmp_path, "tgan", cross=225)
    full = load_trajectories(run_dir, evaluation="full")
    summary = summarize(full).set_index("method")
    assert summary.loc["tgan", "converged_iteration_mean"] == 300  # the full rows' resolution
    pt_ax = [ax for ax in plot_realism(full).axes if ax.get_visible()][1]
    assert all(line.get_markevery() is None for line in pt_ax.get_lines())
    assert not math.isnan(summary.loc["tgan", "final_intra_lpips_mean"])
    assert np.isclose(summary.loc["tgan", "final_intra_lpips_mean"], 0.5)
