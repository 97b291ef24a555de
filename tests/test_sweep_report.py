"""experiments/sweep_report.py read-only: variants' tables from run folders with known answers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from adaptscope.track.store import append_rows  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "sweep_report.py"

# (iteration, evaluation, p_t, intra-LPIPS, nearest-shot LPIPS) per seed; cheap rows lack LPIPS
RUNS = {
    ("sweep-a", 0): [(0, "full", 0.50, 0.60, 0.70), (50, "cheap", 0.92, None, 0.60),
                     (100, "full", 0.95, 0.45, 0.50)],
    ("sweep-a", 1): [(0, "full", 0.50, 0.50, 0.70), (50, "cheap", 0.85, None, 0.60),
                     (100, "full", 0.91, 0.40, 0.40)],
    ("sweep-b", 0): [(0, "full", 0.50, 0.60, 0.70), (100, "full", 0.80, 0.60, 0.65)],
    ("default", 0): [(0, "full", 0.50, 0.60, 0.70), (100, "full", 0.90, 0.30, 0.20)],
}


@pytest.fixture(scope="module")
def sweep_report():
    spec = importlib.util.spec_from_file_location("sweep_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, experiment: str, method: str, seed: int, rows) -> None:
    run_id = f"{experiment}-t-{method}-s{seed}"
    (folder / run_id).mkdir(parents=True)
    append_rows(folder / run_id, [
        {"run_id": run_id, "method": method, "source": "s", "target": "t", "shots": 10,
         "seed": seed, "iteration": it, "images_seen": 4 * it, "evaluation": kind,
         "realism_pt": pt, "intra_lpips": lpips, "nearest_shot_lpips": nearest,
         "fid": None if lpips is None else 100.0 - it / 10}
        for it, kind, pt, lpips, nearest in rows],
        config={"method": method, "seed": seed}, protocol={})


def test_report_only_tables_every_variant(sweep_report, tmp_path):
    runs, default_runs, out = tmp_path / "runs", tmp_path / "default-runs", tmp_path / "out"
    for (experiment, seed), rows in RUNS.items():
        if experiment == "default":
            _write(default_runs, "embedded-default", "dcl", seed, rows)
            _write(default_runs, "embedded-default", "tgan", seed, rows)  # not the variant's
        else:
            folder = runs / {"sweep-a": "variant-a", "sweep-b": "variant-b-x"}[experiment]
            _write(folder, experiment, "dcl", seed, rows)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f"""name = "sweep"
experiment = ""
seeds = [0, 1]
[[variant]]
label = "default"
methods = ["dcl"]
runs = "{default_runs}"
[[variant]]
label = "Variant A"
methods = ["dcl"]
[[variant]]
label = "variant B, x"
methods = ["dcl"]
[[variant]]
label = "never run"
methods = ["dcl"]
""")
    (runs / "never-run").mkdir()  # a folder the sweep made before its first run finished
    sweep_report.main([str(sweep), "--runs", str(runs), "--out", str(out), "--report-only"])
    assert {p.name for p in out.iterdir()} == {"summary.csv", "table.md",
                                                "quality_diversity.png", "realism.png"}
    lines = (out / "table.md").read_text().splitlines()
    assert "EWC" not in lines[0]  # no variant records the EWC gradient ratio
    # A: p_t >= 0.9 at 50 (a cheap row) and 100, mean 75, sample std 35.36; diversity lost
    # (0.60 - 0.45) / 0.60 = 0.25 and (0.50 - 0.40) / 0.50 = 0.20; nearest-shot LPIPS at the last
    # full evaluation 0.50, 0.40; final p_t 0.95, 0.91
    assert lines[2:] == [
        "| default | 1 | 100 (1/1) | 0.500 | 0.200 | 0.300 | 90 | 0.900 |",
        "| Variant A | 2 | 75 ± 35 (2/2) | 0.225 ± 0.035 | 0.450 ± 0.071 | 0.425 ± 0.035 "
        "| 90 ± 0 | 0.930 ± 0.028 |",
        "| variant B, x | 1 | - (0/1) | 0.000 | 0.650 | 0.600 | 90 | 0.800 |",
    ]


def test_ewc_gradient_ratio_column_when_recorded(sweep_report):
    import numpy as np
    import pandas as pd

    row = {"variant": "v", "seeds": 1, "converged_seeds": 0, "converged_mean": np.nan,
           "converged_std": np.nan}
    for name in ("diversity_lost", "final_nearest_shot_lpips", "final_intra_lpips", "final_fid",
                 "final_pt"):
        row |= {f"{name}_mean": 0.5, f"{name}_std": np.nan}
    with_ratio = pd.DataFrame([row | {"ewc_to_adv_gradient_mean": 2.5,
                                      "ewc_to_adv_gradient_std": np.nan}])
    lines = sweep_report.markdown(with_ratio).splitlines()
    assert lines[0].endswith("| EWC / adversarial gradient |") and lines[2].endswith("| 2.500 |")
