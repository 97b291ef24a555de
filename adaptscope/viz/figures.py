"""Writing every figure of a trajectory table to disk, one set per experiment."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from adaptscope.files import atomic_write
from adaptscope.viz.curves import plot_diversity, plot_realism, plot_replication
from adaptscope.viz.panels import EXPERIMENT_COLUMNS, FigureSkipped, by_variant, with_x_axis
from adaptscope.viz.plane import plot_precision_recall, plot_quality_diversity
from adaptscope.viz.samples import DamagedFile, plot_sample_evolution

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
# Figures whose x is the run's own iterations whatever axis the others use (its sample files are
# named by them).
RUN_ITERATION_FIGURES: tuple[str, ...] = ("samples",)


@dataclass
class FigureSet:
    """What `make_figures` wrote, and which figures it left out and why."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    # damaged files the figures were drawn without (a run's sample arrays), one line each
    warnings: list[str] = field(default_factory=list)
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


def _draw(draw: Callable[[pd.DataFrame], Figure], data: pd.DataFrame,
          result: FigureSet) -> Figure:
    """`draw(data)`, its `DamagedFile` warnings noted in `result` (others pass on as usual)."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DamagedFile)
            return draw(data)
    finally:  # once the filters are restored
        for w in caught:
            if issubclass(w.category, DamagedFile):
                result.warnings.append(str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def render_figures(
    df: pd.DataFrame,
    out_dir: str | Path,
    formats: Sequence[str] = ("png",),
    run_dirs: Mapping[str, str | Path] | None = None,
    x: str = "iterations",
    align: str = "run",
) -> tuple[FigureSet, dict[Path, bytes]]:
    """Every figure `make_figures` would write, drawn in memory: what it would write and the
    bytes of each file. Nothing is written, so a figure failing midway replaces nothing."""
    formats = parse_formats(formats)
    out_dir = Path(out_dir)
    result, files = FigureSet(), {}
    for suffix, data in _experiments(by_variant(df)):  # a sweep's variants side by side
        if run_dirs is not None:
            data.attrs["run_dirs"] = dict(run_dirs)
        drawn = with_x_axis(data, x, align)
        for name, draw in FIGURES.items():
            label = f"{name}{suffix}"
            try:
                fig = _draw(draw, data if name in RUN_ITERATION_FIGURES else drawn, result)
            except FigureSkipped as exc:
                result.skipped.append(f"{label}: {exc}")
                continue
            for fmt in formats:
                path = out_dir / f"{label}.{fmt}"
                buffer = io.BytesIO()
                fig.savefig(buffer, format=fmt, dpi=DPI, bbox_inches="tight")
                files[path] = buffer.getvalue()
                result.written.append(path)
                result.by_name.setdefault(name, []).append(path)
    result.warnings = list(dict.fromkeys(result.warnings))
    return result, files


def write_files(files: Mapping[Path, bytes]) -> None:
    """Write each file whole: a temporary file beside it, renamed into place."""
    for path, data in files.items():
        atomic_write(path, lambda handle, data=data: handle.write(data))


def make_figures(
    df: pd.DataFrame,
    out_dir: str | Path,
    formats: Sequence[str] = ("png",),
    run_dirs: Mapping[str, str | Path] | None = None,
    x: str = "iterations",
    align: str = "run",
) -> FigureSet:
    """Draw every figure the table supports into `out_dir`; figures it cannot draw are skipped.
    `x` and `align` choose the curves' x axis (`adaptscope.viz.panels.with_x_axis`).

    With several experiments in the table, each gets its own files (suffix source-target-shots).
    All figures are drawn before any file is written, and each file is replaced whole, so a
    failure leaves the previous figures as they were.
    """
    result, files = render_figures(df, out_dir, formats, run_dirs, x, align)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_files(files)
    return result
