"""Figures and reports drawn from trajectory tables (never from live training state)."""

from adaptscope.viz.compare import compare, paired_differences, rank_stability
from adaptscope.viz.curves import plot_diversity, plot_metrics, plot_realism, plot_replication
from adaptscope.viz.figures import FigureSet, make_figures
from adaptscope.viz.panels import FigureSkipped
from adaptscope.viz.plane import plot_precision_recall, plot_quality_diversity
from adaptscope.viz.report import Report, write_report
from adaptscope.viz.samples import plot_sample_evolution
from adaptscope.viz.style import METHOD_ORDER, method_marker, method_palette
from adaptscope.viz.summary import per_run, summarize

__all__ = [
    "METHOD_ORDER",
    "FigureSet",
    "FigureSkipped",
    "Report",
    "compare",
    "make_figures",
    "method_marker",
    "method_palette",
    "paired_differences",
    "per_run",
    "plot_diversity",
    "plot_metrics",
    "plot_precision_recall",
    "plot_quality_diversity",
    "plot_realism",
    "plot_replication",
    "plot_sample_evolution",
    "rank_stability",
    "summarize",
    "write_report",
]
