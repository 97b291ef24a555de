"""Planes of two metrics: where each method travels while it adapts.

Every method starts from the same source generator; the quality-diversity plane shows the trade
it then makes, realism gained (x) against diversity lost (y), one arrow per evaluation interval.
The precision-recall plane shows the same trade in the FID extractor's feature space: precision
(samples inside the target's manifold) against recall (the target's manifold the samples cover).
"""

from __future__ import annotations

from collections import Counter

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from adaptscope.viz.curves import PANEL_HEIGHT, PANEL_WIDTH, method_legend
from adaptscope.viz.panels import (
    FigureSkipped,
    Panel,
    panels,
    recorded,
    seed_stats,
    seeds_caption,
    x_unit,
)
from adaptscope.viz.style import figure_style, method_marker, method_palette, ordered_methods

Y_COLUMN = "intra_lpips"


def _plane_panels(df: pd.DataFrame, x: str, y: str) -> list[tuple[Panel, Panel]]:
    """Pairs of (x panel, y panel) over the same rows, split by both metrics' protocols."""
    pairs = []
    for x_panel in panels(df, x):
        for y_panel in panels(x_panel.data, y):
            x_rows = Panel(x_panel.spec, x_panel.experiment, x_panel.protocol, y_panel.data)
            pairs.append((x_rows, y_panel))
    return pairs


def _path(data: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Seed-mean position of each method at each evaluation where both metrics exist."""
    xs = seed_stats(data, x)[["method", "iteration", "mean"]].rename(columns={"mean": "x"})
    ys = seed_stats(data, y)[["method", "iteration", "mean"]].rename(columns={"mean": "y"})
    return xs.merge(ys, on=["method", "iteration"]).sort_values(["method", "iteration"])


def _titles(pairs: list[tuple[Panel, Panel]]) -> list[str]:
    """Experiment titles, naming both instruments where one experiment fills several panels."""
    counts = Counter(x.experiment for x, _ in pairs)
    return [
        f"{x.title}\n{' · '.join(filter(None, (x.instrument, y.instrument)))}"
        if counts[x.experiment] > 1
        else x.title
        for x, y in pairs
    ]


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], colour: str) -> None:
    style = {"arrowstyle": "-|>", "color": colour, "lw": 1.4, "shrinkA": 3, "shrinkB": 4}
    ax.annotate("", xy=end, xytext=start, arrowprops={**style, "mutation_scale": 10})


def _draw(
    ax: Axes,
    pair: tuple[Panel, Panel],
    path: pd.DataFrame,
    title: str,
    palette: dict[str, str],
    key: list[Line2D],
    label_ends: bool,
    unit: str,
) -> None:
    x_panel, y_panel = pair
    for method in ordered_methods(path["method"]):
        line = path[path["method"] == method]
        colour, marker = palette[method], method_marker(method)
        px, py = line["x"].to_numpy(), line["y"].to_numpy()
        ax.scatter(px[:-1], py[:-1], color=colour, marker=marker, s=28, zorder=3)
        for i in range(len(line) - 1):
            _arrow(ax, (px[i], py[i]), (px[i + 1], py[i + 1]), colour)
        ax.scatter(px[0], py[0], s=120, facecolors="none", edgecolors="black", zorder=4)
        ax.scatter(
            px[-1],
            py[-1],
            color=colour,
            marker=marker,
            s=75,
            edgecolors="black",
            linewidths=1.1,
            zorder=5,
        )
        if label_ends:  # schedules differ, so the legend cannot name the iterations
            for row in (line.iloc[0], line.iloc[-1]):
                ax.annotate(
                    f"{unit} {int(row['iteration'])}",
                    (row["x"], row["y"]),
                    xytext=(6, 6),
                    textcoords="offset points",
                    fontsize=8,
                    color=colour,
                )
    ax.margins(0.08)
    ax.legend(handles=key, loc="best", fontsize=8, framealpha=0.9)
    ax.set_title(title)
    ax.set_xlabel(x_panel.axis_label)
    ax.set_ylabel(y_panel.axis_label)
    if x_panel.spec.limits:
        ax.set_xlim(*x_panel.spec.limits)
    if y_panel.spec.limits:
        ax.set_ylim(*y_panel.spec.limits)


def _end_markers(paths: list[pd.DataFrame], unit: str) -> tuple[list[Line2D], bool]:
    """Legend entries for the start and end rings, and whether points need their own labels."""
    ends = pd.concat(
        [p.groupby("method")["iteration"].agg(["min", "max"]) for p in paths], ignore_index=True
    )
    firsts, lasts = set(ends["min"]), set(ends["max"])
    shared = len(firsts) == 1 and len(lasts) == 1
    if shared and firsts == lasts:
        start_label, end_label = f"evaluated at {unit} {firsts.pop()}", None
    elif shared:
        start_label, end_label = (f"start ({unit} {firsts.pop()})",
                                  f"end ({unit} {lasts.pop()})")
    else:
        start_label, end_label = "first evaluation", "last evaluation"
    ring = {"linestyle": "none", "markersize": 10, "markeredgecolor": "black"}
    handles = [Line2D([], [], marker="o", markerfacecolor="none", label=start_label, **ring)]
    if end_label:
        handles.append(Line2D([], [], marker="o", markerfacecolor="0.6", label=end_label, **ring))
    return handles, not shared


def plot_quality_diversity(df: pd.DataFrame, x: str | None = None) -> Figure:
    """Realism (FID, or p_t) on x against intra-cluster LPIPS on y, per method over training."""
    if x is None:
        x = "fid" if recorded(df, "fid") else "realism_pt"
    if x not in ("fid", "realism_pt"):
        raise ValueError(f"x must be 'fid' or 'realism_pt', got {x!r}")
    return _plot_plane(df, x, Y_COLUMN, "quality-diversity plane", "Quality–diversity")


def plot_precision_recall(df: pd.DataFrame) -> Figure:
    """Recall on x against precision on y (FID features, k = 3), per method over training."""
    return _plot_plane(df, "recall", "precision", "precision-recall plane", "Precision–recall")


def _plot_plane(df: pd.DataFrame, x: str, y: str, name: str, heading: str) -> Figure:
    pairs = _plane_panels(df, x, y)
    if not pairs:
        raise FigureSkipped(f"{name}: needs rows with both {x} and {y} recorded")
    palette = method_palette(df["method"].astype(str))
    with figure_style():
        size = (max(6.0, PANEL_WIDTH * 1.2 * len(pairs)), PANEL_HEIGHT * 1.35 + 1.0)
        fig = Figure(figsize=size, layout="constrained")
        axes = fig.subplots(1, len(pairs), squeeze=False)[0]
        titles = _titles(pairs)
        paths = [_path(y_panel.data, x, y) for _, y_panel in pairs]
        markers, label_ends = _end_markers(paths, x_unit(df))
        for ax, pair, path, title in zip(axes, pairs, paths, titles, strict=True):
            _draw(ax, pair, path, title, palette, markers, label_ends, x_unit(df))
        parts = [y_panel.data for _, y_panel in pairs]
        fig.suptitle(f"{heading} trajectories\n{seeds_caption(parts, band=False)}")
        methods = pd.concat(parts)["method"].astype(str).unique()
        method_legend(fig, methods, palette)
    return fig
