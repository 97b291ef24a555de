"""`adaptscope run`: plan, execute (here or as a SLURM job array) and resume adaptation runs,
then print what they recorded."""

from __future__ import annotations

from pathlib import Path

import typer

from adaptscope.cli.common import (
    PLUGIN_OPTION,
    PROTOCOL_OPTION,
    app,
    options_given,
    rich_console,
    target_spec,
)
from adaptscope.errors import EXIT_RUN_FAILED, ConfigError


def _split(text: str | None) -> list[str] | None:
    """'tgan, cdc' -> ['tgan', 'cdc']; None stays None."""
    return None if text is None else [v.strip() for v in text.split(",") if v.strip()]


@app.command()
def run(
    methods: str | None = typer.Option(None, help="Comma-separated methods, e.g. tgan,cdc,dcl."),
    config: Path | None = typer.Option(None, help="Experiment TOML (default: embedded world)."),
    target: str | None = typer.Option(None, help="Target: a ToyFaces domain or an image folder."),
    seeds: str | None = typer.Option(None, help="Comma-separated seeds, e.g. 0,1,2."),
    iterations: int | None = typer.Option(None, help="Adaptation iterations per run."),
    eval_every: int | None = typer.Option(None, help="Evaluate every N iterations."),
    out: Path = typer.Option(Path("runs"), help="Directory of run directories."),
    resume: bool = typer.Option(False, help="Continue every unfinished run under --out."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1, ..."),
    workers: int | None = typer.Option(None, help="Runs in parallel (default: one per core)."),
    protocol: str | None = PROTOCOL_OPTION,
    executor: str | None = typer.Option(
        None, help="local (processes here, the default) or slurm (one job array)."),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="slurm: follow the jobs until they end (--no-wait "
        "returns after submitting)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value: key=value."),
    grid: list[str] = typer.Option(
        [], "--grid", metavar="KEY=V1,V2", help="Sweep a setting: one variant per value, its "
        "runs named by it (repeatable: every combination; replaces the grid of --config)."),
    plugin: list[str] = PLUGIN_OPTION,
    log_to: list[str] = typer.Option(
        [], "--log-to", help="Also export each run's rows as they are recorded: tensorboard "
        "(event files in OUT/tensorboard) or wandb (offline runs in OUT/wandb); repeatable or "
        "comma-separated; --resume keeps a run's choice."),
) -> None:
    """Adapt the source model with each method and seed, tracking realism and diversity."""
    from rich.markup import escape

    from adaptscope.track.export import check_backends, parse_backends
    from adaptscope.train import runner
    from adaptscope.train.experiment import load_sweep
    from adaptscope.train.preflight import check_before_writing

    console = rich_console()
    backends = parse_backends(log_to)
    check_backends(backends)  # a missing extra stops before anything is written
    for option, text in (("--methods", methods), ("--seeds", seeds)):
        if text is not None and not _split(text):
            raise ConfigError(f"{option} {text!r} names nothing; give comma-separated values, "
                              f"e.g. {option} {'tgan,cdc' if option == '--methods' else '0,1,2'}")
    seed_list = None
    if seeds is not None:
        try:
            seed_list = [int(v) for v in _split(seeds) or []]
        except ValueError as err:
            raise ConfigError(f"--seeds expects comma-separated integers, got {seeds!r}") from err
    values = options_given(methods=_split(methods), seeds=seed_list,
                           target__data=target and target_spec(target),
                           schedule__iterations=iterations, schedule__eval_every=eval_every,
                           device=device, workers=workers, metrics__protocol=protocol,
                           executor__kind=executor)
    if resume:
        _refuse_changes_on_resume(methods=methods, config=config, target=target, seeds=seeds,
                                  iterations=iterations, eval_every=eval_every, device=device,
                                  protocol=protocol, set_=set_, grid=grid, plugin=plugin,
                                  log_to=log_to)
        planned = runner.plan_resume(out)
        runner.check_recorded_log_to(planned)
        if not planned:
            console.print(f"nothing to resume under {escape(str(out))}")
        n_workers = workers or runner.default_workers(planned, planned[0].spec.device
                                                      if planned else "cpu")
        settings = _resume_executor(executor, out)
    else:
        configs = load_sweep(config, set_, plugin, values=values, grid=grid)
        cfg = configs[0]
        say_protocol(cfg, console)
        if len(configs) > 1 or cfg.variant:
            console.print(f"sweep: {len(configs)} variant(s): "
                          f"{escape('; '.join(c.variant or 'as configured' for c in configs))}",
                          highlight=False)
        planned = runner.plan_experiment(configs, out, console)
        n_workers = cfg.workers or runner.default_workers(planned, cfg.device)
        settings = cfg.executor
    check_before_writing([r for r in planned if r.status != "complete"], out)
    if not resume:
        runner.record_log_to([r for r in planned if r.status == "pending"], backends)
    for r in planned:
        if r.status == "complete":
            console.print(f"{r.spec.run_id}: already complete, kept")
    try:
        if settings.kind == "slurm":
            _run_on_slurm([r for r in planned if r.status == "pending"], settings, out, wait,
                          console)
            if not wait:
                return
        else:
            runner.execute(planned, n_workers, console)
    except KeyboardInterrupt:  # Ctrl-C: execute has stopped every worker; the runs resume
        import shlex

        typer.echo(f"interrupted: the unfinished runs under {out} can be continued with "
                   f"`adaptscope run --resume --out {shlex.quote(str(out))}`", err=True)
        raise typer.Exit(130) from None  # 128 + SIGINT, as a shell reports a Ctrl-C
    print_run_summary(planned, out, console)
    if any(r.status == "failed" for r in planned):
        raise typer.Exit(EXIT_RUN_FAILED)


def say_protocol(cfg, console) -> None:
    """Name the evaluation protocol the runs will record, and any setting that departs from
    the one the config or --protocol asked for."""
    from rich.markup import escape

    departures = getattr(cfg, "protocol_departures", [])
    requested = getattr(cfg, "requested_protocol", "")
    note = (f" (departs from {requested!r} in {'; '.join(departures)})" if departures else "")
    console.print(f"evaluation protocol: {escape(cfg.metrics.protocol + note)}",
                  highlight=False)


def _resume_executor(kind: str | None, out: Path):
    """The executor of `--resume`: local unless --executor slurm, which reuses the settings of
    the folder's last submission."""
    from adaptscope.spec import ExecutorSpec
    from adaptscope.train import slurm

    if kind in (None, "local"):
        return ExecutorSpec()
    if kind != "slurm":
        raise ConfigError(f"--executor {kind!r}: give local or slurm")
    return slurm.saved_settings(out)


def _run_on_slurm(todo, settings, out: Path, wait: bool, console) -> None:
    """Submit the runs as one job array; follow them (progress bars from the run folders)
    until every job has ended, unless `wait` is false."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from adaptscope.train import runner, slurm

    if not todo:
        return
    ids = slurm.submit(todo, settings, out)
    console.print(f"submitted {len(ids)} job(s) to SLURM: {escape(' '.join(ids))}")
    if not wait:
        console.print(f"follow them with [bold]adaptscope status {escape(str(out))}[/bold]")
        return
    columns = (TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[state]}"))
    with Progress(*columns, console=console) as progress:
        tasks = {r.run_dir.name: progress.add_task(
            escape(runner.run_label(r.spec)), total=r.spec.schedule.iterations,
            state="queued") for r in todo}

        def show(statuses) -> None:
            for s in statuses:
                progress.update(tasks[s.run_id], completed=s.iteration or 0, state=s.state)

        final = slurm.follow(out, [r.run_dir for r in todo], show)
    by_dir = {s.path: s for s in final}
    for run in todo:
        status = by_dir.get(run.run_dir)
        run.status = {"done": "done", "failed": "failed"}.get(
            status.state if status else "", "interrupted")
        if status and status.state == "failed":
            console.print(f"[red]{escape(run.spec.run_id)} failed:[/red] "
                          f"{escape(status.detail)}", emoji=False, highlight=False)


def _refuse_changes_on_resume(**given: object) -> None:
    """`--resume` continues runs exactly as they were configured: no option may change them."""
    changing = [f"--{name.rstrip('_').replace('_', '-')}" for name, value in given.items()
                if value not in (None, [], ())]
    if changing:
        raise ConfigError(
            f"--resume continues runs exactly as they were configured, so it takes no "
            f"{', '.join(changing)} (only --out and --workers); to run other settings, start "
            "new runs under another --out")


def print_run_summary(planned, out: Path, console) -> None:
    """Each run's first and last evaluation in a table, after `run` and after `track`."""
    from rich.markup import escape
    from rich.table import Table

    from adaptscope import load_trajectories

    dirs = [r.run_dir for r in planned if (r.run_dir / "trajectory.parquet").exists()]
    if not dirs:
        return
    df = load_trajectories(dirs, evaluation="full")  # the rows with every metric
    table = Table(title=f"Trajectories in {escape(str(out))}/ (first -> last evaluation)")
    for col in ("method", "seed", "target", "iters", "FID", "intra-LPIPS", "p_t"):
        table.add_column(col)
    for _, rows in df.groupby("run_id", sort=True):
        first, last = rows.iloc[0], rows.iloc[-1]
        variant = last.get("variant")
        method = last["method"] + (f" [{variant}]" if isinstance(variant, str) else "")
        table.add_row(escape(method), str(last["seed"]), escape(last["target"]),
                      str(int(last["iteration"])),
                      f"{first['fid']:.4g} -> {last['fid']:.4g}",
                      f"{first['intra_lpips']:.3f} -> {last['intra_lpips']:.3f}",
                      f"{first['realism_pt']:.2f} -> {last['realism_pt']:.2f}")
    console.print(table)
    backbones = sorted(set(df["fid_backbone"].dropna()) | set(df["lpips_backbone"].dropna()))
    protocols = sorted(set(df["protocol"].dropna())) if "protocol" in df else []
    console.print(f"evaluation protocol: {escape(', '.join(protocols) or 'not recorded')} "
                  f"(backbones: {escape(', '.join(backbones))})")
    shown = escape(str(out))
    console.print(f"next: [bold]adaptscope plot {shown}[/bold]  (or `from adaptscope import "
                  f"load_trajectories; load_trajectories('{shown}')`)")
