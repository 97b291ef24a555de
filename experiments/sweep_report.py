"""Run a sweep of one experiment's settings and report what each variant changes.

    python experiments/sweep_report.py experiments/dcl-sensitivity.toml \
        --runs runs/dcl-sensitivity --out reports/dcl-sensitivity

A sweep file names the experiment (`experiment`, a TOML path; empty: the embedded default),
`seeds`, and `[[variant]]` tables, each a `label`, the `methods` it runs and the `set` overrides
(`--set key=value` text) that make it. Every variant runs with `adaptscope run` into its own
folder under --runs (resumed when it exists, so an interrupted sweep continues); a variant that
is the experiment as it stands may instead name finished runs (`runs = "runs/embedded-default"`:
the seeds of its methods there are read, not run again, unless --experiment or --set change the
experiment, in which case it runs like the others). Extra `--set` options of this script apply
to every variant: the same sweep calibrates another source (`--set source.checkpoint=...
--experiment experiments/ffhq-babies.toml`). `--device cuda` and `--workers N` only place the
runs, so named runs are still read.

Writes into --out: summary.csv (per variant, mean and std over seeds), table.md (the table, to
quote in a hand-written README.md beside it), quality_diversity.png (the quality-diversity
plane, variants as curves) and realism.png (p_t, dense where cheap evaluations were recorded).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from adaptscope import load_trajectories
from adaptscope.track.rundir import TRAJECTORY_FILE
from adaptscope.viz.curves import plot_realism
from adaptscope.viz.plane import plot_quality_diversity
from adaptscope.viz.summary import per_run

PT_THRESHOLD = 0.9


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def run_variant(sweep: dict, variant: dict, runs: Path, extra: list[str],
                experiment: str | None, workers: int | None, device: str | None) -> Path:
    out = runs / slug(variant["label"])
    cli = Path(sys.executable).with_name("adaptscope")  # the CLI of this environment
    common = [str(cli), "run", "--out", str(out)]
    if workers is not None:
        common += ["--workers", str(workers)]
    if out.exists():  # an interrupted sweep: continue its unfinished runs first
        _run([*common, "--resume"])  # on the device each run's config names
    config = experiment or sweep.get("experiment", "")
    cmd = [*common, *(["--device", device] if device else []),
           *(["--config", config] if config else []),
           "--methods", ",".join(variant["methods"]),
           "--seeds", ",".join(str(s) for s in sweep["seeds"]),
           "--set", f'name="{sweep["name"]}-{slug(variant["label"])}"']
    for item in [*variant.get("set", []), *extra]:
        cmd += ["--set", item]
    _run(cmd)  # finished runs are kept, missing seeds run
    return out


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def last(run: pd.DataFrame, column: str) -> float:
    values = run[column].dropna() if column in run.columns else pd.Series(dtype=float)
    return float(values.iloc[-1]) if len(values) else np.nan


def variant_table(df: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Per variant: mean and std over seeds of the quantities the report compares."""
    runs = per_run(df, PT_THRESHOLD).set_index("run_id")
    records = []
    for run_id, run in df.sort_values("iteration").groupby("run_id"):
        ratio = run["grad_norm_ewc"] / run["grad_norm_g_adv"] if "grad_norm_ewc" in run else None
        records.append({
            "variant": run["method"].iloc[0], "seed": int(run["seed"].iloc[0]),
            "converged": runs.loc[run_id, "converged_iteration"],
            "diversity_lost": runs.loc[run_id, "relative_diversity_loss"],
            "final_intra_lpips": runs.loc[run_id, "final_intra_lpips"],
            "final_nearest_shot_lpips": runs.loc[run_id, "final_nearest_shot_lpips"],
            "final_fid": runs.loc[run_id, "final_fid"],
            "final_pt": last(run, "realism_pt"),
            "ewc_to_adv_gradient": float(ratio.dropna().iloc[-1]) if ratio is not None and
            ratio.notna().any() else np.nan,
        })
    per = pd.DataFrame.from_records(records)
    grouped = per.groupby("variant", sort=False)
    out = grouped.agg(seeds=("seed", "nunique"), converged_seeds=("converged", "count"))
    for column in per.columns.drop(["variant", "seed"]):
        out[f"{column}_mean"] = grouped[column].mean()
        out[f"{column}_std"] = grouped[column].std()
    return out.reindex(labels).reset_index()


def markdown(table: pd.DataFrame) -> str:
    """The table as Markdown; the EWC gradient-ratio column only when some variant records it."""
    def cell(row, name: str, digits: int) -> str:
        mean, std = row[f"{name}_mean"], row[f"{name}_std"]
        if np.isnan(mean):
            return "-"
        return f"{mean:.{digits}f}" + ("" if np.isnan(std) else f" ± {std:.{digits}f}")

    ratio = bool(table["ewc_to_adv_gradient_mean"].notna().any())
    head = ["variant", "seeds", "p_t >= 0.9 at (it)", "diversity lost",
            "final nearest-shot LPIPS", "final intra-LPIPS", "final FID", "final p_t",
            *(["EWC / adversarial gradient"] if ratio else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        conv = f"{cell(r, 'converged', 0)} ({int(r['converged_seeds'])}/{int(r['seeds'])})"
        cells = [r["variant"], str(int(r["seeds"])), conv, cell(r, "diversity_lost", 3),
                 cell(r, "final_nearest_shot_lpips", 3), cell(r, "final_intra_lpips", 3),
                 cell(r, "final_fid", 0), cell(r, "final_pt", 3),
                 *([cell(r, "ewc_to_adv_gradient", 3)] if ratio else [])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--experiment", default=None, help="Experiment TOML replacing the "
                        "sweep's own (e.g. an FFHQ config).")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        help="key=value applied to every variant.")
    parser.add_argument("--workers", type=int, default=None, help="Runs in parallel.")
    parser.add_argument("--device", default=None, help="Where the runs compute (cpu, cuda, "
                        "...); unlike --set it keeps reading the runs a variant names.")
    parser.add_argument("--seeds", default=None, help="Comma-separated seeds replacing the "
                        "sweep's (a quick first look: --seeds 0).")
    parser.add_argument("--report-only", action="store_true", help="Only read the runs.")
    args = parser.parse_args(argv)
    sweep = tomllib.loads(args.sweep.read_text())
    if args.seeds is not None:
        sweep["seeds"] = [int(s) for s in args.seeds.split(",")]
    variants = sweep["variant"]
    reuse = not (args.experiment or args.extra)  # runs named by `runs` are of this experiment
    folders = {}
    for variant in variants:  # every run first, then every read
        if "runs" in variant and reuse:
            folders[variant["label"]] = Path(variant["runs"])
        elif args.report_only:
            folders[variant["label"]] = args.runs / slug(variant["label"])
        else:
            folders[variant["label"]] = run_variant(sweep, variant, args.runs, args.extra,
                                                    args.experiment, args.workers,
                                                    args.device)
    frames = []
    for variant in variants:
        folder = folders[variant["label"]]
        if not any(folder.rglob(TRAJECTORY_FILE)):  # --report-only before it ran
            print(f"not run yet: {variant['label']} ({folder})")
            continue
        df = load_trajectories(folder)
        df = df[df["method"].isin(variant["methods"]) & df["seed"].isin(sweep["seeds"])]
        df["method"] = variant["label"]  # a variant is one curve, whatever its method
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    labels = [v["label"] for v in variants if v["label"] in set(df["method"])]
    table = variant_table(df, labels)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "summary.csv", index=False)
    (args.out / "table.md").write_text(markdown(table))
    plot_quality_diversity(df).savefig(args.out / "quality_diversity.png", dpi=120)
    plot_realism(df).savefig(args.out / "realism.png", dpi=120)
    print(markdown(table))


if __name__ == "__main__":
    main()
