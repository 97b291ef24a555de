"""Commands over finished runs and studies of them: the figures (`plot`), the report
(`report`), TensorBoard and W&B exports (`export`), and the `calibrate` group, which runs short
probes to choose a method's settings."""

from __future__ import annotations

from pathlib import Path

import typer

from adaptscope.cli.common import app, make_typer, rich_console
from adaptscope.errors import EXIT_RUN_FAILED, AdaptscopeError, ConfigError

calibrate_app = make_typer("Calibrate a method's settings to a model by short probe runs.")
app.add_typer(calibrate_app, name="calibrate")


# --- plot / report commands ------------------------------------------------------------------

_RUNS_ARG = typer.Argument(
    ..., help="Run directories, directories of runs (searched recursively) or trajectory files."
)
_FIGURES_OUT = typer.Option(Path("figures"), "--out", help="Folder to write the figures into.")
_FORMATS = typer.Option("png", "--format", help="Comma-separated figure formats: png, pdf, svg.")
_REPORT_OUT = typer.Option(..., "--out", help="Report folder, for example reports/ffhq-babies.")
_X_AXIS = typer.Option("iterations", "--x", help="The curves' x: iterations (generator updates) "
                       "or images (real images seen: methods with other batch sizes side by side).")
_ALIGN = typer.Option("run", "--align", help="run: count from each run's start; stage: from the "
                      "start of a staged method's last stage (AdAM after its probing).")
_BASELINE = typer.Option(None, "--baseline", metavar="METHOD", help="Compare each method "
                         "with this one (paired by seed) instead of every pair of methods.")


def _x_axis(x: str, align: str) -> tuple[str, str]:
    """--x and --align checked, a bad value reported as a config error naming the choices."""
    from adaptscope.viz.panels import ALIGNMENTS, X_AXES

    for option, value, allowed in (("--x", x, X_AXES), ("--align", align, ALIGNMENTS)):
        if value not in allowed:
            raise ConfigError(f"{option} {value!r} is not an axis; give one of "
                              f"{', '.join(allowed)}")
    return x, align


def _formats(text: str) -> tuple[str, ...]:
    """The --format option parsed, a bad one reported as a config error."""
    from adaptscope.viz.figures import parse_formats

    try:
        return parse_formats(text)
    except ValueError as err:
        if isinstance(err, AdaptscopeError):
            raise
        raise ConfigError(f"--format: {err}") from err


@app.command()
def plot(runs: list[Path] = _RUNS_ARG, out: Path = _FIGURES_OUT, fmt: str = _FORMATS,
         x: str = _X_AXIS, align: str = _ALIGN) -> None:
    """Draw the realism, diversity, quality-diversity, replication and sample figures."""
    import matplotlib

    matplotlib.use("Agg")
    from adaptscope.track.store import load_trajectories
    from adaptscope.viz.figures import make_figures

    formats = _formats(fmt)
    x, align = _x_axis(x, align)
    result = make_figures(load_trajectories(runs), out, formats, x=x, align=align)
    for path in result.written:
        typer.echo(str(path))
    for reason in result.skipped:
        typer.echo(f"skipped {reason}", err=True)
    for line in result.warnings:
        typer.echo(f"warning: {line}", err=True)


@app.command()
def report(runs: list[Path] = _RUNS_ARG, out: Path = _REPORT_OUT, fmt: str = _FORMATS,
           x: str = _X_AXIS, align: str = _ALIGN, baseline: str | None = _BASELINE) -> None:
    """Write figures, the summary and comparison tables (Markdown, CSV) and an index.html."""
    import matplotlib

    matplotlib.use("Agg")
    from adaptscope.viz.report import write_report

    x, align = _x_axis(x, align)
    result = write_report(runs, out, _formats(fmt), log=lambda line: typer.echo(line, err=True),
                          x=x, align=align, baseline=baseline)
    for path in [*result.figures.written, result.summary_csv, result.summary_md,
                 result.comparison_csv, result.comparison_md, result.index]:
        typer.echo(str(path))
    for reason in result.figures.skipped:
        typer.echo(f"skipped {reason}", err=True)
    for line in result.figures.warnings:
        typer.echo(f"warning: {line}", err=True)


# --- export command --------------------------------------------------------------------------


@app.command("export")
def export_cmd(
    runs: list[Path] = _RUNS_ARG,
    tensorboard: Path | None = typer.Option(
        None, "--tensorboard", help="Write TensorBoard event files here, a folder per run."),
    wandb: Path | None = typer.Option(
        None, "--wandb", help="Write offline W&B runs here (upload them with `wandb sync`)."),
) -> None:
    """Export trajectories to TensorBoard and offline W&B runs: only rows not exported before."""
    from adaptscope.track.export import export_runs
    from adaptscope.track.export_sinks import stop_wandb

    try:
        report = export_runs(runs, {"tensorboard": tensorboard, "wandb": wandb})
    finally:
        if wandb is not None:
            stop_wandb()
    for done in report.exports:
        if not done.skipped:
            typer.echo(f"{done.run_id}: {done.rows} new row(s) -> {done.backend} "
                       f"{done.destination}")
    for line in report.warnings:
        typer.echo(f"warning: {line}", err=True)
    if wandb is not None and any(d.rows for d in report.exports if d.backend == "wandb"):
        typer.echo(f"upload with: wandb sync {wandb}/wandb/offline-run-*")


# --- calibrate commands ----------------------------------------------------------------------


@calibrate_app.command("ewc")
def calibrate_ewc_cmd(
    config: Path | None = typer.Option(None, help="Experiment TOML (default: embedded world)."),
    lambdas: str | None = typer.Option(
        None, help="Comma-separated lambdas, e.g. 1,10,100,1e3,1e4 (default: the config's "
        "ewc.lam times 0.01, 0.1, 1, 10, 100); lambda 0 is always probed as the reference."),
    iterations: int | None = typer.Option(None, help="Iterations per probe (default 200)."),
    seed: int = typer.Option(0, help="Seed of every probe."),
    out: Path | None = typer.Option(
        None, help="Keep the probe runs here (a rerun reuses finished ones); default: a "
        "temporary folder."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value: key=value."),
) -> None:
    """Choose EWC's lambda for a model: short probes over a log grid, a row per lambda."""
    from adaptscope.train.calibrate import calibrate_ewc, parse_lambdas

    _, probes = calibrate_ewc(config, set_, None if lambdas is None else parse_lambdas(lambdas),
                              iterations, seed, out, rich_console())
    if any(p.error for p in probes):
        raise typer.Exit(EXIT_RUN_FAILED)
