"""Metric-versus-iteration figures: realism, diversity and replication during adaptation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from adaptscope.track.views import last_stage_start
from adaptscope.viz.panels import (
    FigureSkipped,
    Panel,
    full_rows,
    panel_titles,
    panels,
    recorded,
    seed_stats,
    seeds_caption,
    x_label,
)
from adaptscope.viz.style import (
    figure_style,
    method_label,
    method_marker,
    method_palette,
    ordered_methods,
)

PANEL_WIDTH = 4.6
PANEL_HEIGHT = 3.4


def stage_starts(df: pd.DataFrame) -> dict[str, float]:
    """Per method with more than one stage (AdAM's probing, MineGAN's miner-only start): where
    its last stage begins (`adaptscope.track.views.last_stage_start`), the mean over runs."""
    if "stage" not in df.columns:
        return {}
    starts: dict[str, float] = {}
    for method, runs in df.dropna(subset=["stage"]).groupby("method", sort=True):
        if runs["stage"].nunique() < 2:
            continue
        starts[str(method)] = float(np.mean([last_stage_start(run)
                                             for _, run in runs.groupby("run_id")]))
    return starts


STAGE_LINE = {"linestyle": ":", "linewidth": 1.2}
STAGE_CAPTION = "dotted: where a method's last stage begins"


def _fit_to_means(ax: Axes, stats: pd.DataFrame) -> None:
    """A y range that shows every mean line: the bands' extent, but at most a quarter of the
    means' range beyond them, so one wide band (a collapsing method over three seeds) is cut at
    the edge instead of flattening every other line."""
    lo, hi = float(stats["mean"].min()), float(stats["mean"].max())
    pad = 0.25 * (hi - lo) if hi > lo else 0.05 * abs(hi) or 1.0
    band_lo, band_hi = stats["low"].min(), stats["high"].max()
    bottom = lo - pad if pd.isna(band_lo) else max(lo - pad, min(lo, float(band_lo)))
    top = hi + pad if pd.isna(band_hi) else min(hi + pad, max(hi, float(band_hi)))
    margin = 0.05 * (top - bottom)
    ax.set_ylim(bottom - margin, top + margin)


def _draw(ax: Axes, panel: Panel, title: str, palette: dict[str, str]) -> None:
    stats = seed_stats(panel.data, panel.spec.column)
    for method, start in stage_starts(panel.data).items():  # the cost of a first stage
        ax.axvline(start, color=palette[method], **STAGE_LINE)
    # Markers at the full evaluations only: a dense curve (cheap rows between them) stays a line.
    full = set(full_rows(panel.data)["iteration"])
    for method in ordered_methods(stats["method"]):
        line = stats[stats["method"] == method]
        colour = palette[method]
        style = "-" if len(line) > 1 else "none"
        marked = line["iteration"].isin(full).tolist()
        ax.plot(
            line["iteration"],
            line["mean"],
            linestyle=style,
            marker=method_marker(method),
            markevery=marked if any(marked) and not all(marked) else None,
            markersize=5,
            color=colour,
            linewidth=1.8,
        )
        band = line.dropna(subset=["low", "high"])
        if len(band) > 1:
            ax.fill_between(
                band["iteration"], band["low"], band["high"], color=colour, alpha=0.18, linewidth=0
            )
        elif len(band) == 1:
            ax.errorbar(
                band["iteration"],
                band["mean"],
                yerr=[band["mean"] - band["low"], band["high"] - band["mean"]],
                color=colour,
                capsize=3,
                linestyle="none",
            )
    ax.set_title(title)
    ax.set_xlabel(x_label(panel.data))
    ax.set_ylabel(panel.axis_label)
    if panel.spec.limits:
        ax.set_ylim(*panel.spec.limits)
    else:
        _fit_to_means(ax, stats)
    iterations = np.unique(stats["iteration"])
    if len(iterations) == 1:
        ax.set_xticks(iterations)


def method_legend(
    fig: Figure,
    methods: Sequence[str],
    palette: dict[str, str],
    extra: Sequence[Line2D] = (),
) -> None:
    """One legend for the whole figure, below the panels, in the fixed method order."""
    handles = [
        Line2D(
            [], [], color=palette[m], marker=method_marker(m), linewidth=1.8, label=method_label(m)
        )
        for m in ordered_methods(methods)
    ]
    handles += list(extra)
    # An entry is about 0.45 inch of marker and gap plus 0.075 inch a character, so long
    # names (a plugin's methods, a sweep's variants) take fewer entries a row, not the margin.
    longest = max((len(h.get_label()) for h in handles), default=1)
    per_row = max(1, int(fig.get_figwidth() / max(1.15, 0.45 + 0.075 * longest)))
    rows = -(-len(handles) // per_row)
    ncols = -(-len(handles) // rows)  # balance the rows
    # matplotlib fills legends column by column; reorder so entries read along rows, with blank
    # entries closing the last row (a short column would shift every entry after it).
    blank = Line2D([], [], linestyle="none", label=" ")
    handles += [blank] * (rows * ncols - len(handles))
    ordered = [handles[r * ncols + c] for c in range(ncols) for r in range(rows)]
    fig.legend(handles=ordered, loc="outside lower center", ncols=ncols, frameon=False)


MAX_PER_ROW = 3  # panels side by side before a figure of one-panel metrics wraps


def plot_metrics(df: pd.DataFrame, columns: Sequence[str], title: str) -> Figure:
    """Rows of panels, one row per recorded metric in `columns`, one panel per protocol group.

    Metrics never recorded are left out; if none is recorded the figure is skipped.
    """
    rows = [panels(df, c) for c in columns if recorded(df, c)]
    if not rows:
        raise FigureSkipped(f"{title}: none of {list(columns)} is recorded in these trajectories")
    if all(len(r) == 1 for r in rows):  # one panel per metric reads better side by side,
        flat = [r[0] for r in rows]  # wrapped after MAX_PER_ROW
        rows = [flat[i:i + MAX_PER_ROW] for i in range(0, len(flat), MAX_PER_ROW)]
    ncols = max(len(r) for r in rows)
    palette = method_palette(df["method"].astype(str))
    with figure_style():
        size = (PANEL_WIDTH * ncols, PANEL_HEIGHT * len(rows) + 1.0)
        fig = Figure(figsize=size, layout="constrained")
        axes = fig.subplots(len(rows), ncols, squeeze=False)
        for r, row in enumerate(rows):
            titles = panel_titles(row)
            for c in range(ncols):
                if c < len(row):
                    _draw(axes[r][c], row[c], titles[c], palette)
                else:
                    axes[r][c].set_visible(False)
        parts = [p.data for row in rows for p in row]
        used = pd.concat(parts)
        caption = seeds_caption(parts)
        if stage_starts(used):
            caption += f"; {STAGE_CAPTION}"
        fig.suptitle(f"{title}\n{caption}")
        method_legend(fig, used["method"].astype(str).unique(), palette)
    return fig


def plot_realism(df: pd.DataFrame) -> Figure:
    """FID against the full target set (and the realism score p_t when recorded) per iteration;
    p_t from every row, dense where cheap evaluations recorded it, FID from the full ones."""
    return plot_metrics(df, ["fid", "realism_pt"], "Realism during adaptation")


def plot_diversity(df: pd.DataFrame) -> Figure:
    """Intra-cluster LPIPS per iteration: how much diversity each method keeps."""
    return plot_metrics(df, ["intra_lpips"], "Diversity during adaptation")


def plot_replication(df: pd.DataFrame) -> Figure:
    """Distance to the nearest shot, the samples that replicate a shot (LPIPS and FID
    features) and, in the embedded world, ground-truth diversity."""
    return plot_metrics(
        df,
        ["nearest_shot_lpips", "memorised_lpips", "gu_memorised_lpips", "memorised_features",
         "gt_shot_agreement", "gt_coverage", "gt_replication"],
        "Replication of the training shots",
    )
