"""Method comparisons with their uncertainty: paired differences over seeds and rank stability.

A study of few-shot adaptation has three to five seeds per method, so a difference of means can
be noise. Runs of two methods with the same seed share the evaluation latents (the seed fixes
them), so the difference is taken seed by seed (paired), and its uncertainty is the Student-t
interval of the mean paired difference: with n - 1 = 2 to 4 degrees of freedom a bootstrap of
the differences would resample a handful of values and give an interval too narrow to mean
anything, while the t interval states exactly what 3-5 values allow. Which method ranks first
is judged separately, by how often each keeps its rank when every method's seeds are resampled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from adaptscope.errors import ConfigError
from adaptscope.viz.panels import experiment_title
from adaptscope.viz.style import method_label, ordered_methods
from adaptscope.viz.summary import GROUP_COLUMNS

# Runs are compared only within one experiment and one measurement protocol: numbers of other
# backbones or protocols have other scales.
PAIR_GROUP_COLUMNS: tuple[str, ...] = tuple(c for c in GROUP_COLUMNS if c != "method")
# The headline quantities and whether a larger value is better.
COMPARED: tuple[str, ...] = (
    "converged_iteration",
    "relative_diversity_loss",
    "final_intra_lpips",
    "final_fid",
    "final_memorised_lpips",
)
HIGHER_IS_BETTER: frozenset[str] = frozenset({"final_intra_lpips"})
CONFIDENCE = 0.95
RESAMPLES = 1000
RESAMPLE_SEED = 0

# (column heading, decimals) of each compared quantity in the rendered tables
_DISPLAY: dict[str, tuple[str, int]] = {
    "converged_iteration": ("realism converged (it)", 0),
    "relative_diversity_loss": ("diversity lost", 3),
    "final_intra_lpips": ("final intra-LPIPS", 3),
    "final_fid": ("final FID", 2),
    "final_memorised_lpips": ("final memorised (LPIPS)", 3),
}

CAPTION = (
    "Runs of two methods are paired by seed (only seeds both have, and only pairs where the "
    "quantity is defined for both: a run whose realism never converged has no convergence "
    "iteration); the difference is B − A, the second method minus the first (with a baseline, "
    "the method minus the baseline). The interval is the Student-t 95% confidence interval of "
    "the mean paired difference (t quantile with n − 1 degrees of freedom; suited to 3-5 seeds, "
    "where a bootstrap interval is meaningless; none with fewer than 2 pairs). \"Excludes 0\": "
    "the interval lies entirely above or below 0, i.e. a two-sided paired t-test rejects a "
    "zero mean difference at the 5% level. Rank: each method's place by its mean over the "
    "seeds where the quantity is defined (1 = best; lower is better for convergence, diversity "
    "lost, FID and memorisation, higher for intra-LPIPS); held: the share of "
    f"{RESAMPLES} resamples, each method's seeds drawn with replacement (numpy Generator seed "
    f"{RESAMPLE_SEED}), in which it keeps that rank. A method with one seed never moves in them."
)


def _keys(group: object) -> tuple:
    return group if isinstance(group, tuple) else (group,)


def _seed_values(runs: pd.DataFrame, quantity: str) -> pd.Series:
    """One value per (method, seed); runs repeating a seed within a group are averaged."""
    return runs.groupby(["method", "seed"], sort=True)[quantity].mean()


def check_baseline(table: pd.DataFrame, baseline: str | None) -> None:
    """A ConfigError, on one line naming the methods present, unless `baseline` is None or one
    of the methods of `table` (trajectories or `per_run` rows)."""
    if baseline is None:
        return
    present = ordered_methods(table["method"].astype(str).unique())
    if baseline not in present:
        raise ConfigError(f"baseline {baseline!r} is not among the loaded methods "
                          f"({', '.join(present)})")


def t_interval(differences: Sequence[float] | np.ndarray,
               confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high) of the Student-t interval of the mean of `differences` (NaN dropped);
    the interval is NaN with fewer than two values, the mean with none."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if len(d) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return mean, mean - half, mean + half


def paired_differences(
    runs: pd.DataFrame,
    baseline: str | None = None,
    quantities: Sequence[str] = COMPARED,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Paired-by-seed differences B − A between methods of one experiment and protocol.

    `runs` is `per_run(df)`. Without `baseline` every pair of methods of a group is compared
    (A before B in the methods' fixed order); with it, each other method (B) against it (A).
    One row per group, pair and quantity: `n_pairs` (seeds both methods have where the
    quantity is defined for both), `mean_a` and `mean_b` over those seeds, `mean_b_minus_a`,
    `ci_low` and `ci_high` (the Student-t interval, `confidence` level) and `excludes_0`
    (NA where there is no interval). A `baseline` not among the runs' methods is a ConfigError.
    """
    check_baseline(runs, baseline)
    keys = list(PAIR_GROUP_COLUMNS)
    records = []
    for group, data in runs.groupby(keys, dropna=False, sort=False):
        methods = ordered_methods(data["method"].astype(str).unique())
        if baseline is None:
            pairs = list(combinations(methods, 2))
        else:
            pairs = [(baseline, m) for m in methods if m != baseline] if baseline in methods else []
        for quantity in quantities:
            values = _seed_values(data, quantity)
            for a, b in pairs:
                both = pd.concat([values[a], values[b]], axis=1, keys=["a", "b"],
                                 join="inner").dropna()
                mean, low, high = t_interval((both["b"] - both["a"]).to_numpy(), confidence)
                excludes = pd.NA if math.isnan(low) else bool(low > 0 or high < 0)
                records.append({
                    **dict(zip(keys, _keys(group), strict=True)),
                    "quantity": quantity, "method_a": a, "method_b": b,
                    "n_pairs": len(both),
                    "mean_a": float(both["a"].mean()) if len(both) else math.nan,
                    "mean_b": float(both["b"].mean()) if len(both) else math.nan,
                    "mean_b_minus_a": mean, "ci_low": low, "ci_high": high,
                    "excludes_0": excludes,
                    "better": "higher" if quantity in HIGHER_IS_BETTER else "lower",
                })
    columns = [*keys, "quantity", "method_a", "method_b", "n_pairs", "mean_a", "mean_b",
               "mean_b_minus_a", "ci_low", "ci_high", "excludes_0", "better"]
    out = pd.DataFrame.from_records(records, columns=columns)
    out["excludes_0"] = out["excludes_0"].astype("boolean")
    return out


def _ranks(means: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Rank 1 = best along the last axis; ties share the better rank."""
    return stats.rankdata(-means if higher_is_better else means, method="min", axis=-1)


def rank_stability(
    runs: pd.DataFrame,
    quantities: Sequence[str] = COMPARED,
    resamples: int = RESAMPLES,
    seed: int = RESAMPLE_SEED,
) -> pd.DataFrame:
    """Each method's rank by its mean over seeds, and how often it keeps that rank.

    Per group (experiment and protocol, as `paired_differences`) and quantity, among the
    methods with at least one seed where the quantity is defined: `rank` (1 = best; ties share
    the better rank) and `rank_held`, the share of `resamples` bootstrap resamples (each
    method's seeds drawn with replacement, independently) in which the method has that same
    rank. Each group and quantity draws from a fresh `numpy.random.default_rng(seed)`, so the
    numbers do not depend on what else is in the table.
    """
    keys = list(PAIR_GROUP_COLUMNS)
    records = []
    for group, data in runs.groupby(keys, dropna=False, sort=False):
        methods = ordered_methods(data["method"].astype(str).unique())
        for quantity in quantities:
            values = _seed_values(data, quantity)
            usable = {m: values[m].dropna().to_numpy(dtype=float) for m in methods}
            usable = {m: v for m, v in usable.items() if len(v)}
            if len(usable) < 2:
                continue  # a rank among one method says nothing
            names = list(usable)
            higher = quantity in HIGHER_IS_BETTER
            observed = _ranks(np.array([usable[m].mean() for m in names]), higher)
            rng = np.random.default_rng(seed)
            boot = np.column_stack([
                v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)
                for v in usable.values()
            ])
            held = (_ranks(boot, higher) == observed).mean(axis=0)
            for i, m in enumerate(names):
                records.append({
                    **dict(zip(keys, _keys(group), strict=True)),
                    "quantity": quantity, "method": m, "n_seeds": len(usable[m]),
                    "mean": float(usable[m].mean()), "rank": int(observed[i]),
                    "rank_held": float(held[i]),
                    "better": "higher" if higher else "lower",
                })
    columns = [*keys, "quantity", "method", "n_seeds", "mean", "rank", "rank_held", "better"]
    return pd.DataFrame.from_records(records, columns=columns)


def compare(
    runs: pd.DataFrame,
    baseline: str | None = None,
    quantities: Sequence[str] = COMPARED,
    resamples: int = RESAMPLES,
    seed: int = RESAMPLE_SEED,
) -> pd.DataFrame:
    """The comparison table (comparison.csv): `paired_differences` with each method's rank and
    its stability alongside (`with_ranks`)."""
    return with_ranks(paired_differences(runs, baseline, quantities),
                      rank_stability(runs, quantities, resamples, seed))


def with_ranks(pairs: pd.DataFrame, ranks: pd.DataFrame) -> pd.DataFrame:
    """`pairs` (from `paired_differences`) with `rank_a`, `rank_a_held`, `rank_b` and
    `rank_b_held` from `ranks` (from `rank_stability`) beside each pair."""
    keys = [*PAIR_GROUP_COLUMNS, "quantity"]
    for side in ("a", "b"):
        part = ranks[[*keys, "method", "rank", "rank_held"]].rename(columns={
            "method": f"method_{side}", "rank": f"rank_{side}", "rank_held": f"rank_{side}_held"})
        pairs = pairs.merge(part, on=[*keys, f"method_{side}"], how="left")
    return pairs


def _number(value: float, decimals: int, sign: bool = False) -> str:
    if value is None or value is pd.NA or math.isnan(value):
        return "–"
    return f"{value:{'+' if sign else ''}.{decimals}f}"


def _text(value: object) -> str:
    return "–" if value is None or value is pd.NA or value != value else str(value)


def display_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The paired differences as strings: one row per pair and quantity."""
    rows = []
    for _, r in table.iterrows():
        heading, decimals = _DISPLAY.get(r["quantity"], (r["quantity"], 3))
        interval = (f"[{_number(r['ci_low'], decimals, True)}, "
                    f"{_number(r['ci_high'], decimals, True)}]")
        excludes = r["excludes_0"]
        rows.append({
            "experiment": experiment_title(r["source"], r["target"], r["shots"]),
            "quantity": f"{heading}, {r['better']} is better",
            "A": method_label(str(r["method_a"])),
            "B": method_label(str(r["method_b"])),
            "seeds paired": str(int(r["n_pairs"])),
            "A (mean)": _number(r["mean_a"], decimals),
            "B (mean)": _number(r["mean_b"], decimals),
            "B − A (mean)": _number(r["mean_b_minus_a"], decimals, True),
            "95% interval of B − A": "–" if excludes is pd.NA else interval,
            "excludes 0": "–" if excludes is pd.NA else ("yes" if excludes else "no"),
            "protocol": _text(r["protocol"]),
            "FID backbone": _text(r["fid_backbone"]),
            "LPIPS backbone": _text(r["lpips_backbone"]),
        })
    return pd.DataFrame(rows, columns=[
        "experiment", "quantity", "A", "B", "seeds paired", "A (mean)", "B (mean)",
        "B − A (mean)", "95% interval of B − A", "excludes 0", "protocol", "FID backbone",
        "LPIPS backbone"])


def display_ranks(ranks: pd.DataFrame) -> pd.DataFrame:
    """The rank-stability table as strings: one row per method and quantity."""
    rows = []
    for _, r in ranks.iterrows():
        heading, decimals = _DISPLAY.get(r["quantity"], (r["quantity"], 3))
        rows.append({
            "experiment": experiment_title(r["source"], r["target"], r["shots"]),
            "quantity": f"{heading}, {r['better']} is better",
            "method": method_label(str(r["method"])),
            "seeds": str(int(r["n_seeds"])),
            "mean": _number(r["mean"], decimals),
            "rank": str(int(r["rank"])),
            "rank held": f"{r['rank_held']:.0%}",
            "protocol": _text(r["protocol"]),
            "FID backbone": _text(r["fid_backbone"]),
            "LPIPS backbone": _text(r["lpips_backbone"]),
        })
    return pd.DataFrame(rows, columns=["experiment", "quantity", "method", "seeds", "mean",
                                       "rank", "rank held", "protocol", "FID backbone",
                                       "LPIPS backbone"])
