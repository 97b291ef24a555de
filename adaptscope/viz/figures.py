"""Writing every figure of a trajectory table to disk, one set per experiment."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from adaptscope.viz.curves import plot_diversity, plot_realism, plot_replication
from adaptscope.viz.panels import EXPERIMENT_COLUMNS, FigureSkipped
from adaptscope.viz.plane import plot_precision_recall, plot_quality_diversity
from adaptscope.viz.samples import plot_sample_evolution

FORMATS: tuple[str, ...] = ("png", "pdf", "svg")
DPI = 150

FIGURES: dict[str, Callable[[pd.DataFrame], Figure]] = {
    "realism": plot_realism,
    "diversity": plot_diversity,
    "quality_diversity": plot_quality_diversity,
    "precision_recall": plot_precision_recall,
    "replication": plot_replication,
    "samples": plot_sample_evolution,
}


@dataclass
class FigureSet:
    """What `make_figures` wrote, and which figures it left out and why."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    # figure name -> written files of that figure (all formats), per experiment in order
    by_name: dict[str, list[Path]] = field(default_factory=dict)


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """Accept 'png,pdf' or a list; refuse formats the figures are not written in."""
    items = text.split(",") if isinstance(text, str) else list(text)
    formats = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in items if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise ValueError(f"figure formats must be among {', '.join(FORMATS)}; got {text!r}")
    return formats


def _slug(*parts: object) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", "-".join(str(p) for p in parts)).strip("-").lower()


def _experiments(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    groups = list(df.groupby(list(EXPERIMENT_COLUMNS), sort=True))
    if len(groups) == 1:
        return [("", df)]
    out = []
    for (source, target, shots), data in groups:
        data = data.copy()
        data.attrs = dict(df.attrs)
        out.append((f"_{_slug(source, target, f'{shots}shot')}", data))
    return out


def make_figures(
    df: pd.DataFrame,
    out_dir: str | Path,
    formats: Sequence[str] = ("png",),
    run_dirs: Mapping[str, str | Path] | None = None,
) -> FigureSet:
    """Draw every figure the table supports into `out_dir`; figures it cannot draw are skipped.

    With several experiments in the table, each gets its own files (suffix source-target-shots).
    """
    formats = parse_formats(formats)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = FigureSet()
    for suffix, data in _experiments(df):
        if run_dirs is not None:
            data.attrs["run_dirs"] = dict(run_dirs)
        for name, draw in FIGURES.items():
            label = f"{name}{suffix}"
            try:
                fig = draw(data)
            except FigureSkipped as exc:
                result.skipped.append(f"{label}: {exc}")
                continue
            for fmt in formats:
                path = out_dir / f"{label}.{fmt}"
                fig.savefig(path, format=fmt, dpi=DPI, bbox_inches="tight")
                result.written.append(path)
                result.by_name.setdefault(name, []).append(path)
    return result
