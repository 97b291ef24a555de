"""`adaptscope calibrate ewc`: the choice rule on known numbers, and the command end to end on
the tiny world (probes are real runs of the shared loop)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from _tiny_world import write_experiment
from rich.console import Console
from typer.testing import CliRunner

from adaptscope.cli import app
from adaptscope.errors import ConfigError
from adaptscope.track.store import load_trajectories
from adaptscope.train.calibrate import (
    Probe,
    choose,
    lam_label,
    log_grid,
    parse_lambdas,
    print_result,
    probe_spec,
)
from adaptscope.train.experiment import load_experiment, run_specs

runner = CliRunner()

# reports/ewc-calibration/summary.csv: mean gradient ratio and final p_t over three seeds
REPORT = [Probe(0, 0.0, 0.987), Probe(10, 0.245, 0.978), Probe(100, 2.603, 0.963),
          Probe(1e3, 28.889, 0.830), Probe(1e4, 314.5, 0.035), Probe(1e5, 3372.0, 0.0)]


def test_the_rule_chooses_the_reports_lambda():
    choice = choose(REPORT)
    assert choice.lam == 100
    assert choice.verdicts[10] == "meets the rule" and choice.verdicts[100] == "chosen"
    assert choice.verdicts[1e3].startswith("ratio > 3")
    assert not choice.notes


def test_the_choice_is_printed_with_where_to_write_it():
    console = Console(record=True, width=200)
    print_result(console, REPORT, choose(REPORT), 200, Path("experiments/x.toml"), 12.0)
    text = console.export_text()
    assert re.search(r"^\S\s*1e3\s*\S\s*28\.9\s*\S\s*0\.830\s*\S\s*ratio > 3", text, re.M)
    assert "chosen: ewc.lam = 100: write `lam = 100` under [ewc] in experiments/x.toml" in text


def test_realism_lagging_lambda_0s_rules_a_lambda_out():
    # the report's curves at iteration 500: p_t 0.71 (lambda 0), 0.63 (10), 0.46 (100)
    probes = [Probe(0, 0.0, 0.71), Probe(10, 0.3, 0.63), Probe(100, 2.0, 0.46),
              Probe(1e3, 2.9, 0.11)]
    choice = choose(probes)
    assert choice.lam == 100  # 0.46 >= 0.5 * 0.71 - 0.05 = 0.305; 0.11 is not
    assert choice.verdicts[1e3].startswith("p_t < 0.30")


def test_before_realism_rises_the_ratio_decides_and_says_so():
    probes = [Probe(0, 0.0, 1e-9), Probe(1, 0.03, 1e-9), Probe(10, 0.4, 2e-10),
              Probe(100, 3.5, 1e-11)]
    choice = choose(probes)
    assert choice.lam == 10
    assert choice.verdicts[1].startswith("ratio < 0.2")
    assert any("barely begun to rise" in n for n in choice.notes)


def test_no_lambda_in_range_suggests_where_to_look():
    weak = choose([Probe(0, 0.0, 0.9), Probe(1, 1e-4, 0.9), Probe(10, 1e-3, 0.9)])
    assert weak.lam is None
    assert "--lambdas 100,1e3,1e4,1e5,1e6" in weak.notes[-1]  # ratio 1 near 10 / 1e-3
    strong = choose([Probe(0, 0.0, 0.9), Probe(1e6, 50.0, 0.1), Probe(1e7, 400.0, 0.0)])
    assert strong.lam is None and "smaller lambdas, around --lambdas 200,2e3,2e4" in \
        strong.notes[-1]
    gap = choose([Probe(0, 0.0, 0.9), Probe(10, 0.01, 0.9), Probe(1e4, 10.0, 0.5)])
    assert gap.lam is None and gap.notes[-1].endswith("--lambdas 60,300,2e3")


def test_failed_probes_are_never_chosen():
    probes = [Probe(0, 0.0, 0.9), Probe(10, 0.5, 0.9), Probe(100, error="TrainingDiverged")]
    choice = choose(probes)
    assert choice.lam == 10 and choice.verdicts[100] == "failed"
    with pytest.raises(ValueError, match="lambda 0"):
        choose([Probe(0, error="x"), Probe(10, 0.5, 0.9)])


def test_lambda_text():
    assert parse_lambdas("1e3, 10,1 ,10") == [1.0, 10.0, 1000.0]
    for bad in ("1,x", "-1,10", "nan", "0"):
        with pytest.raises(ConfigError, match="--lambdas"):
            parse_lambdas(bad)
    assert [lam_label(v) for v in (0, 0.5, 100, 1e3, 5e8, 2.5e-5)] == [
        "0", "0.5", "100", "1e3", "5e8", "2.5e-5"]
    assert log_grid(100) == [1, 10, 100, 1e3, 1e4]
    assert log_grid(5e8) == [5e6, 5e7, 5e8, 5e9, 5e10]


def test_a_probe_is_the_experiments_ewc_run_shortened():
    (base,) = run_specs(load_experiment(None, values={"methods": ["ewc"], "seeds": [0]}))
    probe = probe_spec(base, 1e3, 200)
    assert probe.method == "ewc" and probe.method_params["lam"] == 1e3
    assert probe.train == base.train and probe.source == base.source
    assert probe.schedule.evaluation_points() == [0, 200]
    assert probe.schedule.cheap_points() == [100]  # the last row's means: iterations 100-199
    assert probe_spec(base, 1, 5).schedule.cheap_points() == [3]
    assert probe.metrics.realism == base.metrics.realism == "toy"
    assert probe.metrics.fid_n_gen == 200 and not probe.metrics.ground_truth
    assert probe.run_id != probe_spec(base, 100, 200).run_id


def test_command_runs_probes_and_prints_a_row_per_lambda(tmp_path, source_checkpoint,
                                                         one_thread):
    config = write_experiment(tmp_path / "tiny.toml", source_checkpoint)
    out = tmp_path / "probes"
    args = ["calibrate", "ewc", "--config", str(config), "--lambdas", "1e4",
            "--iterations", "4", "--set", "ewc.n_fisher=4", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = {m.group(1): m.group(0) for m in
            re.finditer(r"^\S*\s*(0|1e4)\s+\S+.*$", result.output, re.M)}
    assert set(rows) == {"0", "1e4"}, result.output
    assert "rule: the largest lambda" in result.output
    assert re.search(r"^chosen: (ewc\.lam = \S+|none)", result.output, re.M), result.output

    df = load_trajectories(out)  # the probes are real runs: their rows are kept in --out
    assert sorted(df["iteration"].unique()) == [0, 2, 4]
    last = df[df["iteration"] == 4]
    assert len(last) == 2 and last["grad_norm_g_adv"].gt(0).all()
    assert sorted(last["variant"]) == ["ewc.lam=0", "ewc.lam=1e4"]  # a sweep of lambda
    lam_1e4 = last[last["variant"] == "ewc.lam=1e4"].iloc[0]
    assert lam_1e4["grad_norm_ewc"] > 0 and math.isfinite(lam_1e4["realism_pt"])

    again = runner.invoke(app, args)  # finished probes are read, not run again
    assert again.exit_code == 0 and "(2 finished before, read again)" in " ".join(
        again.output.split())
    assert len(load_trajectories(out)) == len(df)


def test_command_refuses_bad_input_before_any_probe(tmp_path):
    result = runner.invoke(app, ["calibrate", "ewc", "--lambdas", "ten", "--out",
                                 str(tmp_path / "p")])
    assert result.exit_code == 2 and "--lambdas: 'ten'" in result.output
    result = runner.invoke(app, ["calibrate", "ewc", "--iterations", "1", "--out",
                                 str(tmp_path / "p")])
    assert result.exit_code == 2 and "at least 2 iterations" in result.output
    assert not (tmp_path / "p").exists()


def test_a_gpu_config_names_its_missing_files_before_any_probe(tmp_path):
    config = Path(__file__).resolve().parents[1] / "experiments" / "ffhq-babies.toml"
    result = runner.invoke(app, ["calibrate", "ewc", "--config", str(config), "--out",
                                 str(tmp_path / "p")])
    assert result.exit_code == 2
    assert "checkpoints/550000.pt does not exist" in " ".join(result.output.split())
    assert not (tmp_path / "p").exists()
