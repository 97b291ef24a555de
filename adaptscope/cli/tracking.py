"""`adaptscope track`: evaluate checkpoints trained elsewhere under the same protocol as
`adaptscope run`, so they can sit in the same tables and figures."""

from __future__ import annotations

from pathlib import Path

import typer

from adaptscope.cli.common import PROTOCOL_OPTION, app, options_given, rich_console, target_spec
from adaptscope.cli.running import print_run_summary, say_protocol
from adaptscope.errors import EXIT_RUN_FAILED, AdaptscopeError, ConfigError


@app.command()
def track(
    checkpoints: list[Path] = typer.Argument(
        ..., help="Checkpoint files or folders of them; the iteration is the last number in "
        "each file name (000500.pt, iter_500.pt)."),
    method: str = typer.Option(
        ..., help="Label of this run's method in tables and figures, e.g. cdc-official."),
    config: Path | None = typer.Option(
        None, help="Experiment TOML for the source, target and protocol (default: embedded)."),
    target: str | None = typer.Option(None, help="Target: a ToyFaces domain or an image folder."),
    seed: int = typer.Option(0, help="Seed of the evaluation latents; match your other runs."),
    out: Path = typer.Option(Path("runs"), help="Directory of run directories."),
    source: bool = typer.Option(
        True, "--source/--no-source", help="Evaluate the source checkpoint as iteration 0."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1, ..."),
    protocol: str | None = PROTOCOL_OPTION,
    set_: list[str] = typer.Option([], "--set", help="Override a config value: key=value."),
) -> None:
    """Track a run trained elsewhere: evaluate its saved checkpoints under the same protocol."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from adaptscope.track.external import find_checkpoints, track_checkpoints
    from adaptscope.train import runner
    from adaptscope.train.experiment import load_experiment
    from adaptscope.train.preflight import check_track

    console = rich_console()
    if not method.strip():
        raise ConfigError("--method is empty: give a label such as cdc-official")
    values = {"methods": [], **options_given(target__data=target and target_spec(target),
                                             device=device, metrics__protocol=protocol)}
    cfg = load_experiment(config, set_, values=values)
    say_protocol(cfg, console)
    spec = cfg.spec_for(method, seed)
    found = find_checkpoints(checkpoints)
    check_track(spec, found, include_source=source)  # before anything is written
    run_dir = out / spec.run_id
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[latest]}"))
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"{escape(method)} s{seed}", total=None, latest="")

        def on_event(event: dict) -> None:
            progress.update(task, total=event["total"], completed=event["done"],
                            latest=runner.describe_latest(event))

        try:
            track_checkpoints(spec, found, run_dir, include_source=source, on_event=on_event)
        except AdaptscopeError as err:
            err.exit_code = EXIT_RUN_FAILED  # the run had started: its recorded rows are kept
            raise
    print_run_summary([runner.PlannedRun(spec, run_dir)], out, console)
