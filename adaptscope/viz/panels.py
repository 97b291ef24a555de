"""Splitting a trajectory table into panels that never mix measuring instruments.

A number is comparable only with numbers from the same experiment (source, target, shots) and
the same protocol (the named evaluation protocol, the backbone that measured it, and for FID the
generated-sample count). Every figure draws one panel per such group, so two protocols never
share an axis.

The metrics a cheap evaluation measures (p_t, the nearest-shot LPIPS) take every row, dense where
`schedule.cheap_every` recorded them; every other metric takes the full evaluations only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from adaptscope.track.schema import CHEAP_METRICS, FULL
from adaptscope.track.views import images_per_iteration, stage_aligned

EXPERIMENT_COLUMNS: tuple[str, ...] = ("source", "target", "shots")
ITERATION_LABEL = "iteration (generator updates)"
X_AXES: tuple[str, ...] = ("iterations", "images")
ALIGNMENTS: tuple[str, ...] = ("run", "stage")


def by_variant(df: pd.DataFrame) -> pd.DataFrame:
    """The table with each sweep variant as a method of its own, `ewc [ewc.lam=10]`, so every
    figure and table draws variants side by side as it draws methods; the `variant` column is
    emptied, so applying it twice changes nothing. A table without variants is returned as is."""
    if "variant" not in df.columns or not df["variant"].notna().any():
        return df
    out = df.copy()
    swept = out["variant"].notna()
    out["method"] = out["method"].astype(str).where(
        ~swept, out["method"].astype(str) + " [" + out["variant"].astype(str) + "]")
    out["variant"] = pd.Series(pd.NA, index=out.index, dtype="string")
    return out


def with_x_axis(df: pd.DataFrame, x: str = "iterations", align: str = "run") -> pd.DataFrame:
    """The table as the curves and planes draw it: their x (the `iteration` column) counted in
    generator updates or in real images seen (`x="images"`: a batch-2 method such as RICK
    beside batch-4 ones), from each run's start or from the start of its last stage
    (`align="stage"`, `adaptscope.track.views.stage_aligned`). The label and the unit go in
    `attrs` (`x_label`, `x_unit`) for the axes and point labels."""
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}; got {x!r}")
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {', '.join(ALIGNMENTS)}; got {align!r}")
    data = stage_aligned(df) if align == "stage" else df.copy()
    if x == "images":
        data["iteration"] = data["images_seen"]
        if "stage_start" in data.columns:  # where a stage begins, in images too
            per = data["run_id"].map({run_id: images_per_iteration(run)
                                      for run_id, run in df.groupby("run_id")})
            data["stage_start"] = (data["stage_start"].astype("float64") * per).round()
    since = " since the last stage began" if align == "stage" else ""
    label = "real images seen" if x == "images" else ITERATION_LABEL
    data.attrs = {**df.attrs, "x_label": label + since,
                  "x_unit": ("images" if x == "images" else "it") + (" of last stage" if since
                                                                    else "")}
    return data


def x_label(data: pd.DataFrame) -> str:
    """The x axis's label of a table from `with_x_axis` (iterations from the run's start
    otherwise)."""
    return data.attrs.get("x_label", ITERATION_LABEL)


def x_unit(data: pd.DataFrame) -> str:
    """The unit that names a point on the x axis ("it" for iterations)."""
    return data.attrs.get("x_unit", "it")


class FigureSkipped(ValueError):
    """A figure cannot be drawn from this table (for example, its metric was never recorded)."""


@dataclass(frozen=True)
class Metric:
    """How one metric column is labelled and which columns identify its instrument."""

    column: str
    name: str
    better: str | None  # "lower", "higher" or None when neither is better
    protocol: tuple[str, ...] = ()
    limits: tuple[float, float] | None = None

    @property
    def arrow(self) -> str:
        return {"lower": " ↓", "higher": " ↑"}.get(self.better or "", "")


_FID = ("protocol", "fid_backbone", "fid_n_gen")  # the instrument of the FID-feature metrics
_LPIPS = ("protocol", "lpips_backbone")
_UNIT = (-0.02, 1.02)

METRICS: dict[str, Metric] = {
    "fid": Metric("fid", "FID to full target set", "lower", _FID),
    "kid": Metric("kid", "KID to full target set", "lower", _FID),
    "precision": Metric("precision", "precision (k = 3)", "higher", _FID, _UNIT),
    "recall": Metric("recall", "recall (k = 3)", "higher", _FID, _UNIT),
    "density": Metric("density", "density (k = 5)", "higher", _FID),
    "coverage": Metric("coverage", "coverage (k = 5)", "higher", _FID, _UNIT),
    "memorised_features": Metric(
        "memorised_features", "samples replicating a shot (features)", "lower", _FID),
    "realism_pt": Metric("realism_pt", "realism classifier p\N{LATIN SUBSCRIPT SMALL LETTER T}",
                         "higher", (), _UNIT),
    "intra_lpips": Metric("intra_lpips", "intra-cluster LPIPS", "higher", _LPIPS),
    "nearest_shot_lpips": Metric("nearest_shot_lpips", "LPIPS to nearest shot", "higher", _LPIPS),
    "memorised_lpips": Metric(
        "memorised_lpips", "samples replicating a shot (LPIPS)", "lower", _LPIPS),
    "gu_memorised_lpips": Metric(
        "gu_memorised_lpips", "copies of a shot, Gu et al. (LPIPS)", "lower", _LPIPS),
    "gu_memorised_features": Metric(
        "gu_memorised_features", "copies of a shot, Gu et al. (features)", "lower", _FID),
    "cmmd": Metric("cmmd", "CMMD to target set", "lower", ("protocol", "cmmd_backbone")),
    "gt_coverage": Metric("gt_coverage", "attribute coverage (ground truth)", "higher"),
    "gt_replication": Metric("gt_replication", "shot replication (ground truth)", "lower"),
    "gt_shot_agreement": Metric(
        "gt_shot_agreement", "attributes shared with nearest shot (ground truth)", "lower"
    ),
}


def metric(column: str) -> Metric:
    """The label spec of `column`; unknown extra metrics get a neutral one."""
    return METRICS.get(column, Metric(column, column.replace("_", " "), None))


def full_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of full evaluations (all of them in a table without an `evaluation` column)."""
    return df[df["evaluation"] == FULL] if "evaluation" in df.columns else df


def metric_rows(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """The rows that measure `column`: every row for a metric of the cheap evaluation, the full
    evaluations for the others."""
    rows = df if column in CHEAP_METRICS else full_rows(df)
    return rows[rows[column].notna()] if column in rows.columns else rows.iloc[:0]


def recorded(df: pd.DataFrame, column: str) -> bool:
    """Whether `column` exists and holds at least one value."""
    return column in df.columns and bool(df[column].notna().any())


def experiment_title(source: str, target: str, shots: int) -> str:
    """How every figure, table and report names an experiment."""
    return f"{source} → {target}, {int(shots)}-shot"


def _protocol_text(spec: Metric, values: tuple) -> str:
    parts = []
    for column, value in zip(spec.protocol, values, strict=True):
        if pd.isna(value):
            if column == "protocol":
                continue  # trajectories written before protocols were named
            parts.append("backbone not recorded" if column.endswith("backbone") else "n unknown")
        elif column == "protocol":
            parts.append(f"{value}:")
        elif column == "fid_n_gen":
            parts.append(f"{int(value)} generated")
        else:
            parts.append(str(value))
    return ", ".join(parts).replace(":,", ":")


@dataclass
class Panel:
    """Rows of one experiment measured with one protocol, for one metric."""

    spec: Metric
    experiment: tuple
    protocol: tuple
    data: pd.DataFrame

    @property
    def title(self) -> str:
        return experiment_title(*self.experiment)

    @property
    def instrument(self) -> str:
        """What measured the metric (backbone, sample count); empty when nothing is recorded."""
        return _protocol_text(self.spec, self.protocol)

    @property
    def axis_label(self) -> str:
        text = f"{self.spec.name}{self.spec.arrow}"
        return f"{text}\n[{self.instrument}]" if self.instrument else text


def panel_titles(items: list[Panel]) -> list[str]:
    """Experiment titles, naming the instrument where one experiment fills several panels."""
    counts: dict[tuple, int] = {}
    for p in items:
        key = (p.spec.column, p.experiment)
        counts[key] = counts.get(key, 0) + 1
    return [
        f"{p.title}\n{p.instrument}"
        if counts[(p.spec.column, p.experiment)] > 1 and p.instrument
        else p.title
        for p in items
    ]


def panels(df: pd.DataFrame, column: str) -> list[Panel]:
    """One panel per (experiment, protocol) holding the rows where `column` was recorded."""
    spec = metric(column)
    rows = metric_rows(df, column)
    if rows.empty:
        return []
    rows = rows.assign(**{c: pd.NA for c in spec.protocol if c not in rows.columns})
    keys = [*EXPERIMENT_COLUMNS, *spec.protocol]
    out = []
    for key, data in rows.groupby(keys, dropna=False, sort=True):
        key = tuple(key)
        out.append(Panel(spec, key[:3], key[3:], data))
    return out


def seed_stats(data: pd.DataFrame, column: str, confidence: float = 0.95) -> pd.DataFrame:
    """Mean over seeds per (method, iteration) with a Student-t confidence interval.

    With three seeds a bootstrap interval is meaningless, so the band is the t interval of the
    mean; it is NaN where only one seed was run.
    """
    grouped = data.groupby(["method", "iteration"], sort=True)[column]
    out = grouped.agg(mean="mean", std="std", n="count").reset_index()
    n = out["n"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(n > 1, stats.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)), np.nan)
        half = t * out["std"].to_numpy(dtype=float) / np.sqrt(n)
    out["low"] = out["mean"] - half
    out["high"] = out["mean"] + half
    out["method"] = out["method"].astype(str)
    return out


def seeds_caption(parts: list[pd.DataFrame], band: bool = True) -> str:
    """How many seeds the lines average over, for a figure's subtitle: counted per panel (each
    of `parts`) and method, so panels holding different seeds show the range."""
    counts = pd.concat([p.groupby("method")["seed"].nunique() for p in parts]) if parts else \
        pd.Series(dtype=int)
    if counts.empty:
        return ""
    lo, hi = int(counts.min()), int(counts.max())
    if hi == 1:
        return "single seed (no confidence band)" if band else "single seed"
    n = f"{lo}" if lo == hi else f"{lo}–{hi}"
    return f"mean and 95% CI over {n} seeds" if band else f"mean over {n} seeds"
