"""The unified framework's numbers: when realism converges and what diversity costs by then.

The paper's argument is that methods differ less in where realism ends up than in how much
diversity they have lost by the time it gets there; these quantities make that comparable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from adaptscope.track.views import images_per_iteration, last_stage_start
from adaptscope.viz.panels import (
    EXPERIMENT_COLUMNS,
    by_variant,
    full_rows,
    metric_rows,
    recorded,
)
from adaptscope.viz.style import ordered_methods

GROUP_COLUMNS: tuple[str, ...] = (
    *EXPERIMENT_COLUMNS,
    "method",
    "protocol",
    "fid_backbone",
    "lpips_backbone",
)
QUANTITIES: tuple[str, ...] = (
    "converged_iteration",
    "converged_stage_iteration",
    "converged_images_seen",
    "intra_lpips_at_convergence",
    "relative_diversity_loss",
    "lpips_slope_per_1k",
    "final_fid",
    "best_fid",
    "final_intra_lpips",
    "final_precision",
    "final_recall",
    "final_memorised_lpips",
    "final_realism_pt",
)


def _series(run: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, values) where `column` was recorded, in iteration order: every row for p_t
    (dense where cheap evaluations recorded it), the full evaluations for FID and LPIPS."""
    if column not in run.columns:
        return np.array([]), np.array([])
    rows = metric_rows(run, column)
    return rows["iteration"].to_numpy(dtype=float), rows[column].to_numpy(dtype=float)


def _last(run: pd.DataFrame, column: str) -> float:
    """The value of `column` at the last full evaluation that recorded it (NaN if none)."""
    rows = full_rows(run)
    values = rows[column].dropna() if column in rows.columns else pd.Series(dtype=float)
    return float(values.iloc[-1]) if len(values) else np.nan


def _convergence(run: pd.DataFrame, pt_threshold: float, fid_tolerance: float) -> tuple[float, str]:
    """First iteration at which realism counts as converged, and the criterion used."""
    its, pt = _series(run, "realism_pt")
    if len(pt):
        hit = its[pt >= pt_threshold]
        return (hit[0] if len(hit) else np.nan), f"p_t >= {pt_threshold:g}"
    its, fid = _series(run, "fid")
    if len(fid):
        hit = its[fid <= fid.min() * (1 + fid_tolerance)]
        return hit[0], f"FID within {fid_tolerance:.0%} of its best"
    return np.nan, "no realism metric"


SELECTED_ON_VALIDATION = "validation split"
SELECTED_ON_REPORTING = "reporting set"


def _best_fid(run: pd.DataFrame, fid: np.ndarray) -> dict:
    """The run's best FID and the set that chose it: the iteration of lowest `fid_selection`
    (the held-out validation split) where the run recorded one, else the lowest FID itself,
    chosen on the very images it is reported against (as AdAM, RICK and Uni-DAD report)."""
    if not len(fid):
        return {"best_fid": np.nan, "best_fid_selected_on": pd.NA}
    rows = full_rows(run)
    if "fid_selection" in rows.columns and rows["fid_selection"].notna().any():
        scored = rows[rows["fid_selection"].notna() & rows["fid"].notna()]
        chosen = scored.loc[scored["fid_selection"].astype(float).idxmin()]
        return {"best_fid": float(chosen["fid"]), "best_fid_selected_on": SELECTED_ON_VALIDATION}
    return {"best_fid": float(fid.min()), "best_fid_selected_on": SELECTED_ON_REPORTING}


def _run_quantities(run: pd.DataFrame, pt_threshold: float, fid_tolerance: float) -> dict:
    run = run.sort_values("iteration")
    converged, criterion = _convergence(run, pt_threshold, fid_tolerance)
    its, lpips = _series(run, "intra_lpips")
    at_convergence = rel_loss = slope = final_lpips = np.nan
    if len(lpips):
        final_lpips = lpips[-1]
        rel_loss = (lpips[0] - lpips[-1]) / lpips[0] if lpips[0] else np.nan
        if not np.isnan(converged) and its[0] <= converged <= its[-1]:
            # Linear between evaluations, in case LPIPS was measured on a coarser schedule.
            at_convergence = float(np.interp(converged, its, lpips))
        if len(np.unique(its)) > 1:
            slope = np.polyfit(its / 1000.0, lpips, 1)[0]
    _, fid = _series(run, "fid")
    finals = {f"final_{c}": _last(run, c)
              for c in ("precision", "recall", "memorised_lpips", "nearest_shot_lpips",
                        "realism_pt")}
    start = last_stage_start(run)
    in_stage, _ = _convergence(run[run["iteration"] >= start], pt_threshold, fid_tolerance)
    return {
        "converged_iteration": converged,
        "converged_stage_iteration": in_stage - start,
        "converged_images_seen": converged * images_per_iteration(run),
        "last_stage_start": start,
        "criterion": criterion,
        "intra_lpips_at_convergence": at_convergence,
        "relative_diversity_loss": rel_loss,
        "lpips_slope_per_1k": slope,
        "final_fid": fid[-1] if len(fid) else np.nan,
        **_best_fid(run, fid),
        "final_intra_lpips": final_lpips,
        **finals,
        "final_iteration": int(run["iteration"].max()),
    }


def per_run(
    df: pd.DataFrame, pt_threshold: float = 0.9, fid_tolerance: float = 0.1
) -> pd.DataFrame:
    """The summary quantities of every run, before averaging over seeds, and the final
    nearest-shot LPIPS (`final_nearest_shot_lpips`, at the last full evaluation). A sweep's
    variants count as methods of their own (`by_variant`)."""
    df = by_variant(df)
    records = []
    for run_id, run in df.groupby("run_id", sort=True):
        full = full_rows(run)
        first = (full if len(full) else run).iloc[0]  # a cheap row has no FID backbone
        record = {c: first.get(c, pd.NA) for c in GROUP_COLUMNS}  # a hand-made table may
        # lack the protocol columns
        record.update(run_id=run_id, seed=int(first["seed"]))
        record.update(_run_quantities(run, pt_threshold, fid_tolerance))
        records.append(record)
    return pd.DataFrame.from_records(records)


def summarize(
    df: pd.DataFrame, pt_threshold: float = 0.9, fid_tolerance: float = 0.1
) -> pd.DataFrame:
    """Per (experiment, method, protocol, backbones): mean and std over seeds of the
    framework's quantities.

    - `converged_iteration`: first evaluation with p_t >= `pt_threshold` when p_t is recorded
      (cheap evaluations included, so as finely as `schedule.cheap_every` resolves it), else
      the first with FID within `fid_tolerance` (relative) of the run's best FID; the mean is
      over the seeds that converged (`n_converged`).
    - `converged_stage_iteration`: the same criterion on the rows of the run's last stage,
      counted from that stage's start (AdAM's adaptation after its probing restarted from the
      source; equal to `converged_iteration` for methods of one stage), and
      `converged_images_seen`: in real images seen (a batch-2 method beside batch-4 ones).
    - `intra_lpips_at_convergence`: intra-cluster LPIPS at that iteration (linear between the
      full evaluations around it).
    - `relative_diversity_loss`: (first - last) / first intra-LPIPS over the recorded schedule.
    - `lpips_slope_per_1k`: least-squares slope of intra-LPIPS per 1000 iterations.
    - `final_fid`, `final_intra_lpips`, `final_precision`, `final_recall`,
      `final_memorised_lpips`, `final_realism_pt`: values at the last full evaluation that
      recorded them.
    - `best_fid`: the run's FID at its best iteration, and `best_fid_selected_on` the set that
      chose that iteration: the "validation split" (lowest `fid_selection`, with
      `target.validation_fraction`) or the "reporting set" (the lowest FID itself, as AdAM,
      RICK and Uni-DAD report: optimistic, as it selects on the images it reports on).
    """
    if df.empty:
        raise ValueError("cannot summarise an empty trajectory table")
    if not (recorded(df, "fid") or recorded(df, "realism_pt") or recorded(df, "intra_lpips")):
        raise ValueError("no realism or diversity metric is recorded in these trajectories")
    runs = per_run(df, pt_threshold, fid_tolerance)
    keys = list(GROUP_COLUMNS)
    grouped = runs.groupby(keys, dropna=False, sort=False)
    out = grouped.agg(
        n_seeds=("seed", "nunique"),
        n_converged=("converged_iteration", "count"),
        criterion=("criterion", lambda s: "; ".join(sorted(set(s)))),
        best_fid_selected_on=("best_fid_selected_on",
                              lambda s: "; ".join(sorted(set(s.dropna()))) or pd.NA),
        final_iteration=("final_iteration", "max"),
    )
    for quantity in QUANTITIES:
        out[f"{quantity}_mean"] = grouped[quantity].mean()
        out[f"{quantity}_std"] = grouped[quantity].std()
    out = out.reset_index()
    rank = {m: i for i, m in enumerate(ordered_methods(out["method"].astype(str)))}
    out["_rank"] = out["method"].astype(str).map(rank)
    out = out.sort_values(["source", "target", "shots", "_rank", "method"], kind="stable")
    return out.drop(columns="_rank").reset_index(drop=True)
