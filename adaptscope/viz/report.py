"""A self-contained report folder: figures, the summary table and an index.html tying them up.

The page restates the measurement protocol read from each trajectory's parquet metadata, so a
figure copied out of the report can always be traced back to how its numbers were made.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from adaptscope.track.store import PathLike, find_trajectory_files, load_trajectories, read_metadata
from adaptscope.viz.compare import (
    CAPTION,
    check_baseline,
    display_comparison,
    display_ranks,
    paired_differences,
    rank_stability,
    with_ranks,
)
from adaptscope.viz.figures import (
    FIGURES,
    FORMATS,
    FigureSet,
    parse_formats,
    render_figures,
    write_files,
)
from adaptscope.viz.panels import by_variant, experiment_title
from adaptscope.viz.style import method_label
from adaptscope.viz.summary import SELECTED_ON_REPORTING, per_run, summarize
from adaptscope.viz.tables import display_table, to_markdown

FIGURES_DIR = "figures"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
COMPARISON_CSV = "comparison.csv"
COMPARISON_MD = "comparison.md"
INDEX_HTML = "index.html"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f2f2f2; }
figure { margin: 2em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #666; }
"""


@dataclass
class Report:
    """Paths of everything `write_report` produced."""

    index: Path
    summary_csv: Path
    summary_md: Path
    figures: FigureSet
    comparison_csv: Path
    comparison_md: Path


def selection_warning(summary: pd.DataFrame) -> str:
    """Why a best FID is optimistic, when some method's was chosen on the images it is reported
    against (no `target.validation_fraction`); empty when every one was chosen on held-out
    images."""
    chosen = summary.get("best_fid_selected_on", pd.Series(dtype=object)).astype(str)
    same = summary.loc[chosen.str.contains(SELECTED_ON_REPORTING, regex=False), "method"]
    if same.empty:
        return ""
    return (f"the best FID of {', '.join(method_label(str(m)) for m in same.unique())} is "
            "selected on the same images it is reported against (the lowest FID over training, "
            "as AdAM, RICK and Uni-DAD report), so it is optimistic; hold out a validation split "
            "with --set target.validation_fraction=0.2 to select on other images.")


def _runs_table(df: pd.DataFrame, meta: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for run_id, run in df.groupby("run_id", sort=True):
        first = run.iloc[0]
        full = int((run["evaluation"] == "full").sum())
        rows.append(
            {
                "run": run_id,
                "method": first["method"],
                "experiment": experiment_title(first["source"], first["target"], first["shots"]),
                "seed": int(first["seed"]),
                "evaluations": full,
                "cheap evaluations": len(run) - full,
                "last iteration": int(run["iteration"].max()),
                "FID backbone": ", ".join(sorted(run["fid_backbone"].dropna().unique())) or "–",
                "FID n_gen": ", ".join(str(n) for n in sorted(run["fid_n_gen"].dropna().unique()))
                or "–",
                "LPIPS backbone": ", ".join(sorted(run["lpips_backbone"].dropna().unique())) or "–",
                "adaptscope": meta.get(str(run_id), {}).get("version") or "–",
            }
        )
    return pd.DataFrame(rows)


def _evaluations(df: pd.DataFrame) -> str:
    """How many rows the report draws from: full evaluations, and cheap ones where there are."""
    full = int((df["evaluation"] == "full").sum())
    cheap = len(df) - full
    return f"{full} evaluations" + (f" (and {cheap} cheap ones: p_t, nearest-shot LPIPS)"
                                    if cheap else "")


def _protocol_section(meta: dict[str, dict]) -> str:
    """Each distinct protocol once, with the runs it applies to."""
    groups: dict[str, list[str]] = {}
    for run_id, m in sorted(meta.items()):
        key = json.dumps(m.get("protocol"), indent=2, sort_keys=True, default=str)
        groups.setdefault(key, []).append(run_id)
    parts = []
    for text, run_ids in groups.items():
        names = ", ".join(html.escape(r) for r in run_ids)
        parts.append(f"<p>Runs: {names}</p><pre>{html.escape(text)}</pre>")
    return "\n".join(parts)


def _configs_section(meta: dict[str, dict]) -> str:
    parts = []
    for run_id, m in sorted(meta.items()):
        text = json.dumps(m.get("config"), indent=2, sort_keys=True, default=str)
        parts.append(
            f"<details><summary>{html.escape(run_id)}</summary><pre>{html.escape(text)}</pre>"
            "</details>"
        )
    return "\n".join(parts)


def _figures_section(figures: FigureSet, out_dir: Path) -> str:
    parts = []
    for name, paths in figures.by_name.items():
        for png in (p for p in paths if p.suffix == ".png"):
            others = [p for p in paths if p.stem == png.stem and p.suffix != ".png"]
            links = " ".join(
                f'<a href="{html.escape(p.relative_to(out_dir).as_posix())}">{p.suffix[1:]}</a>'
                for p in others
            )
            src = html.escape(png.relative_to(out_dir).as_posix())
            parts.append(
                f'<figure><img src="{src}" alt="{html.escape(name)}">'
                f"<figcaption>{html.escape(png.stem)} {links}</figcaption></figure>"
            )
    for heading, lines in (("Figures not drawn", figures.skipped),
                           ("Files the figures were drawn without", figures.warnings)):
        if lines:
            items = "".join(f"<li>{html.escape(s)}</li>" for s in lines)
            parts.append(f'<p class="note">{heading}:</p><ul class="note">{items}</ul>')
    return "\n".join(parts)


def _run_metadata(paths: Iterable[PathLike], df: pd.DataFrame) -> dict[str, dict]:
    meta = {}
    for file in find_trajectory_files(paths):
        m = read_metadata(file)
        run_ids = pd.read_parquet(file, columns=["run_id"])["run_id"].unique()
        for run_id in run_ids:
            if run_id in set(df["run_id"]):
                meta[str(run_id)] = m
    return meta


def replaced_files(out_dir: PathLike) -> list[str]:
    """The files of an earlier report in `out_dir` that writing a report there replaces: its
    page, its summary, the figures in its figures/ folder (sorted) and its comparison tables
    (relative paths)."""
    out_dir = Path(out_dir)
    names = [n for n in (INDEX_HTML, SUMMARY_CSV, SUMMARY_MD) if (out_dir / n).is_file()]
    figures = out_dir / FIGURES_DIR
    if figures.is_dir():
        names += sorted(f"{FIGURES_DIR}/{p.name}" for p in figures.iterdir()
                        if p.is_file() and p.suffix[1:] in FORMATS
                        and any(p.stem.startswith(name) for name in FIGURES))
    names += [n for n in (COMPARISON_CSV, COMPARISON_MD) if (out_dir / n).is_file()]
    return names


def write_report(
    paths: PathLike | Sequence[PathLike],
    out_dir: PathLike,
    formats: Sequence[str] = ("png",),
    log: Callable[[str], None] | None = None,
    x: str = "iterations",
    align: str = "run",
    baseline: str | None = None,
) -> Report:
    """Load trajectories from `paths` and write figures, summary.{csv,md},
    comparison.{csv,md} and index.html. `x` and `align` choose the curves' x axis
    (`adaptscope.viz.panels.with_x_axis`); `baseline` compares every method with that one
    instead of every pair (`adaptscope.viz.compare.compare`; a method not loaded is a
    ConfigError, raised before anything is drawn).

    Into a folder that holds an earlier report, `log` is told first which files are replaced.
    Everything is made in memory before any file is written, and each file is replaced whole
    (the page last), so a failure leaves the earlier report as it was.
    """
    from adaptscope.version import __version__

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out_dir = Path(out_dir)
    df = by_variant(load_trajectories(paths))  # a sweep's variants as methods of their own
    check_baseline(df, baseline)  # before anything is drawn
    formats = tuple(dict.fromkeys(("png", *parse_formats(formats))))  # the page shows PNGs
    figures, files = render_figures(df, out_dir / FIGURES_DIR, formats, x=x, align=align)

    summary = summarize(df)
    selection = selection_warning(summary)
    summary_csv = out_dir / SUMMARY_CSV
    files[summary_csv] = summary.to_csv(index=False).encode("utf-8")
    table = display_table(summary)
    summary_md = out_dir / SUMMARY_MD
    files[summary_md] = ("# Summary over seeds (mean ± std)\n\n" + to_markdown(table)
                         + (f"\nWarning: {selection}\n" if selection else "")).encode()

    runs_by_seed = per_run(df)
    ranks = rank_stability(runs_by_seed)
    comparison = with_ranks(paired_differences(runs_by_seed, baseline), ranks)
    comparison_csv = out_dir / COMPARISON_CSV
    files[comparison_csv] = comparison.to_csv(index=False).encode("utf-8")
    pairs_table, ranks_table = display_comparison(comparison), display_ranks(ranks)
    against = f"each method against {baseline}" if baseline else "every pair of methods"
    comparison_md = out_dir / COMPARISON_MD
    files[comparison_md] = (
        f"# Comparisons ({against})\n\n{CAPTION}\n\n## Paired differences (B − A)\n\n"
        + to_markdown(pairs_table) + "\n## Rank stability\n\n" + to_markdown(ranks_table)
    ).encode("utf-8")

    meta = _run_metadata(paths, df)
    runs = _runs_table(df, meta)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>adaptscope report</title>
<style>{_CSS}</style></head><body>
<h1>adaptscope report</h1>
<p class="note">{len(runs)} runs, {df["method"].nunique()} methods, {_evaluations(df)};
written by adaptscope {html.escape(__version__)}.</p>
<h2>Summary</h2>
<p class="note">Mean ± std over seeds. Realism converges at the first evaluation meeting the
criterion column; diversity lost is (first − last) / first intra-cluster LPIPS. Numbers from
different backbones are not comparable. Also as <a href="{SUMMARY_CSV}">CSV</a> and
<a href="{SUMMARY_MD}">Markdown</a>.</p>
{f'<p class="note"><b>Warning:</b> {html.escape(selection)}</p>' if selection else ""}
{table.to_html(index=False, escape=True, border=0)}
<h2>Comparisons</h2>
<p class="note">{html.escape(against[0].upper() + against[1:])}, within each experiment and
protocol. {html.escape(CAPTION)} Also as <a href="{COMPARISON_CSV}">CSV</a> and
<a href="{COMPARISON_MD}">Markdown</a>.</p>
<h3>Paired differences (B − A)</h3>
{pairs_table.to_html(index=False, escape=True, border=0)}
<h3>Rank stability</h3>
{ranks_table.to_html(index=False, escape=True, border=0)}
<h2>Figures</h2>
{_figures_section(figures, out_dir)}
<h2>Protocol</h2>
{runs.to_html(index=False, escape=True, border=0)}
<h3>Evaluation protocols (from the trajectories' metadata)</h3>
{_protocol_section(meta)}
<h3>Run configurations</h3>
{_configs_section(meta)}
</body></html>
"""
    index = out_dir / INDEX_HTML
    files[index] = page.encode("utf-8")
    replaced = replaced_files(out_dir)
    if replaced and log is not None:
        log(f"replacing {', '.join(replaced)} in {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_files(files)  # the page last: it links the rest
    return Report(index, summary_csv, summary_md, figures, comparison_csv, comparison_md)
