"""The `adaptscope` command line: one typer application, thin wrappers over the library."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Track realism and diversity of GANs adapting to a new domain from a few images.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Datasets: the embedded ToyFaces world and image folders.",
                       no_args_is_help=True)
pretrain_app = typer.Typer(help="Rebuild the embedded world's shipped models.",
                           no_args_is_help=True)
realism_app = typer.Typer(help="The realism classifier p_t for real target domains.",
                          no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(pretrain_app, name="pretrain")
app.add_typer(realism_app, name="realism")


@app.command()
def version() -> None:
    """Print the adaptscope version."""
    from adaptscope import __version__

    typer.echo(__version__)


# --- data commands ---------------------------------------------------------------------------


@data_app.command("toyfaces")
def data_toyfaces(
    domain: str = typer.Option(..., help="source, sunglasses, babies or sketches."),
    count: int = typer.Option(..., min=1, help="Number of images to write."),
    size: int = typer.Option(32, min=8, help="Image side in pixels."),
    out: str = typer.Option(..., help="Output folder (created if missing)."),
    start: int | None = typer.Option(
        None, min=0, help="First index; default: the domain's full set (targets) or training range."
    ),
) -> None:
    """Write ToyFaces images as PNGs plus an attributes.csv of their ground-truth attributes."""
    from adaptscope.data import toyfaces

    if domain not in toyfaces.DOMAINS:
        raise typer.BadParameter(
            f"unknown domain {domain!r}; choose one of {', '.join(toyfaces.DOMAINS)}",
            param_hint="--domain",
        )
    first = toyfaces.full_set(domain).start if start is None else start
    path = toyfaces.write_domain(domain, count, size, out, start=first)
    typer.echo(
        f"wrote {count} {domain} images at {size}px (indices {first}..{first + count - 1}) "
        f"and attributes.csv to {path}"
    )


# --- pretrain commands -----------------------------------------------------------------------


@pretrain_app.command("backbone")
def pretrain_backbone_cmd(
    config: Path = typer.Option(Path("experiments/pretrain-backbone.toml"), help="Recipe (TOML)."),
    out: Path = typer.Option(Path("work/toynet.pt"), help="Where to write the trained network."),
    steps: int | None = typer.Option(None, help="Override the number of steps."),
    seed: int | None = typer.Option(None, help="Override the seed."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe value: key=value."),
) -> None:
    """Train the ToyFaces metric network (FID / LPIPS / realism backbone) and save it."""
    import torch

    from adaptscope.config import apply_overrides, from_dict, read_toml
    from adaptscope.metrics.toynet import ToyNetRecipe, train_toynet

    data = read_toml(config) if config.exists() else {}
    extra = [f"{k}={v}" for k, v in (("steps", steps), ("seed", seed)) if v is not None]
    r = from_dict(ToyNetRecipe, apply_overrides(data, [*set_, *extra]), str(config))
    torch.set_num_threads(r.threads)
    train_toynet(r.steps, r.batch, r.seed, r.size, out, lr=r.lr, noise=r.noise,
                 eval_per_domain=r.eval_per_domain, log=typer.echo)

@pretrain_app.command("source")
def pretrain_source_cmd(
    config: Path = typer.Option(Path("experiments/pretrain-source.toml"), help="Recipe (TOML)."),
    out: Path = typer.Option(Path("work/pretrain-source"), help="Training directory (resumes)."),
    steps: int | None = typer.Option(None, help="Override the number of steps."),
    export: Path | None = typer.Option(None, help="Write the finished model here (g, d, g_ema)."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe value: key=value."),
) -> None:
    """Train the embedded world's source StyleGAN2 on ToyFaces (resumable; long)."""
    from adaptscope.config import apply_overrides, from_dict, read_toml, to_dict
    from adaptscope.train.pretrain import PretrainConfig, export_source, pretrain_source

    data = read_toml(config) if config.exists() else {}
    if steps is not None:
        set_ = [*set_, f"steps={steps}"]
    cfg = from_dict(PretrainConfig, apply_overrides(data, set_), str(config))
    ckpt = pretrain_source(cfg, out, log=typer.echo)
    if export is not None:
        export_source(ckpt, export, meta={"recipe": to_dict(cfg)})
        typer.echo(f"wrote {export}")


# --- realism commands ------------------------------------------------------------------------


@realism_app.command("train")
def realism_train(
    target: Path = typer.Option(..., help="Folder (or .zip) of the full real target set."),
    out: Path = typer.Option(..., help="Where to write the classifier (.pt)."),
    source: Path | None = typer.Option(None, help="Folder (or .zip) of real source images."),
    source_checkpoint: Path | None = typer.Option(
        None, help="Source StyleGAN2 checkpoint to sample source images from (instead of --source)."
    ),
    n_source: int | None = typer.Option(
        None, min=2, help="Images to sample from --source-checkpoint (default: as many as target)."
    ),
    size: int = typer.Option(128, min=16, help="Classifier input side in pixels."),
    epochs: int = typer.Option(10, min=1),
    batch_size: int = typer.Option(32, min=2),
    seed: int = typer.Option(0),
    pretrained: bool | None = typer.Option(
        None, "--pretrained/--scratch",
        help="ImageNet ResNet-18 weights (required) or from scratch; default: use them if found.",
    ),
    weights_dir: Path | None = typer.Option(None, help="Folder holding resnet18-f37072fd.pth."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
) -> None:
    """Train the source-vs-target realism classifier (p_t) and report held-out accuracy."""
    from adaptscope.metrics.realism import source_sampler, train_realism_classifier

    if (source is None) == (source_checkpoint is None):
        raise typer.BadParameter("give exactly one of --source and --source-checkpoint")
    try:
        sampler = None if source_checkpoint is None else source_sampler(
            source_checkpoint, seed=seed, device=device)
        result = train_realism_classifier(
            target, source, out, sample_source=sampler, n_source=n_source, image_size=size,
            epochs=epochs, batch_size=batch_size, seed=seed, pretrained=pretrained,
            weights_dir=weights_dir, device=device, log=typer.echo,
        )
    except (FileNotFoundError, ValueError) as exc:  # includes data, checkpoint, weights errors
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"wrote {result.path}: held-out accuracy {result.val_accuracy:.4f} on "
               f"{result.n_val} images (trunk initialised from {result.init})")


# --- run / methods commands ------------------------------------------------------------------

def _target_spec(value: str) -> str:
    """'babies' -> 'toyfaces:babies'; folders, zips and 'toyfaces:...' pass through."""
    from adaptscope.data import toyfaces

    if ":" not in value and not Path(value).exists() and value in toyfaces.DOMAINS:
        return f"toyfaces:{value}"
    return value


_PLUGIN = typer.Option(
    [], "--plugin", help="A .py file or module registering methods of your own (repeatable).")


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
    set_: list[str] = typer.Option([], "--set", help="Override a config value: key=value."),
    plugin: list[str] = _PLUGIN,
) -> None:
    """Adapt the source model with each method and seed, tracking realism and diversity."""
    from rich.console import Console

    from adaptscope.config import ConfigError
    from adaptscope.data.errors import DataError
    from adaptscope.models import CheckpointError
    from adaptscope.train import runner
    from adaptscope.train.loop import check_inputs
    from adaptscope.train.spec import load_experiment

    console = Console()
    overrides = list(set_)
    for key, value in (("methods", methods), ("seeds", seeds)):
        if value is not None:
            items = [v.strip() for v in value.split(",") if v.strip()]
            quoted = [f'"{v}"' if key == "methods" else v for v in items]
            overrides.append(f"{key}=[{', '.join(quoted)}]")
    for key, value in (("target.data", target and _target_spec(target)),
                       ("schedule.iterations", iterations),
                       ("schedule.eval_every", eval_every), ("device", device),
                       ("workers", workers)):
        if value is not None:
            overrides.append(f'{key}="{value}"' if isinstance(value, str) else f"{key}={value}")
    try:
        if resume:
            planned = runner.unfinished_runs(out)
            if not planned:
                console.print(f"nothing to resume under {out}")
            n_workers = workers or runner.default_workers(planned, planned[0].spec.device
                                                          if planned else "cpu")
        else:
            cfg = load_experiment(config, overrides, plugin)
            planned = runner.plan(cfg.runs(), out)
            n_workers = cfg.workers or runner.default_workers(planned, cfg.device)
    except (ConfigError, runner.RunDirectoryError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err
    try:
        for r in planned:
            if r.status != "complete":
                check_inputs(r.spec)
    except (CheckpointError, DataError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err
    for r in planned:
        if r.status == "complete":
            console.print(f"{r.spec.run_id}: already complete, kept")
    runner.execute(planned, n_workers, console)
    _print_run_summary(planned, out, console)
    if any(r.status == "failed" for r in planned):
        raise typer.Exit(1)


def _print_run_summary(planned, out: Path, console) -> None:
    from rich.table import Table

    from adaptscope import load_trajectories

    dirs = [r.run_dir for r in planned if (r.run_dir / "trajectory.parquet").exists()]
    if not dirs:
        return
    df = load_trajectories(dirs)
    table = Table(title=f"Trajectories in {out}/ (first -> last evaluation)")
    for col in ("method", "seed", "target", "iters", "FID", "intra-LPIPS", "p_t"):
        table.add_column(col)
    for _, rows in df.groupby("run_id", sort=True):
        first, last = rows.iloc[0], rows.iloc[-1]
        table.add_row(last["method"], str(last["seed"]), last["target"],
                      str(int(last["iteration"])),
                      f"{first['fid']:.4g} -> {last['fid']:.4g}",
                      f"{first['intra_lpips']:.3f} -> {last['intra_lpips']:.3f}",
                      f"{first['realism_pt']:.2f} -> {last['realism_pt']:.2f}")
    console.print(table)
    backbones = sorted(set(df["fid_backbone"].dropna()) | set(df["lpips_backbone"].dropna()))
    console.print(f"metric backbones: {', '.join(backbones)}")
    console.print(f"next: [bold]adaptscope plot {out}[/bold]  (or `from adaptscope import "
                  f"load_trajectories; load_trajectories('{out}')`)")


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
    set_: list[str] = typer.Option([], "--set", help="Override a config value: key=value."),
) -> None:
    """Track a run trained elsewhere: evaluate its saved checkpoints under the same protocol."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from adaptscope.config import ConfigError
    from adaptscope.data.errors import DataError
    from adaptscope.models import CheckpointError
    from adaptscope.track.external import find_checkpoints, track_checkpoints
    from adaptscope.train import runner
    from adaptscope.train.spec import load_experiment

    console = Console()
    overrides = [*set_, "methods=[]"]
    for key, value in (("target.data", target and _target_spec(target)), ("device", device)):
        if value is not None:
            overrides.append(f'{key}="{value}"')
    try:
        if not method.strip():
            raise ConfigError("--method is empty: give a label such as cdc-official")
        spec = load_experiment(config, overrides).spec_for(method, seed)
        found = find_checkpoints(checkpoints)
    except (ConfigError, CheckpointError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from err
    run_dir = out / spec.run_id
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[latest]}"))
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"{method} s{seed}", total=None, latest="")

        def on_event(event: dict) -> None:
            progress.update(task, total=event["total"], completed=event["done"],
                            latest=runner.describe_latest(event))

        try:
            track_checkpoints(spec, found, run_dir, include_source=source, on_event=on_event)
        except (CheckpointError, DataError, ValueError) as err:
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(1) from err
    _print_run_summary([runner.PlannedRun(spec, run_dir)], out, console)


@app.command("methods")
def list_methods(plugin: list[str] = _PLUGIN) -> None:
    """List the registered adaptation methods and their hyperparameters."""
    from adaptscope.methods import METHODS
    from adaptscope.methods.base import param_docs
    from adaptscope.methods.plugins import PluginError, import_plugins

    try:
        import_plugins(plugin)
    except PluginError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err

    width = max(len(name) for name in METHODS) + 1
    for name in sorted(METHODS):
        cls = METHODS[name]
        typer.echo(f"{name:<{width}}{cls.summary}")
        for field_name, default, doc in param_docs(cls):
            typer.echo(f"{'':<{width}}{name}.{field_name} = {default!r}  {doc.split('. ')[0]}")


# --- plot / report commands ------------------------------------------------------------------

_RUNS_ARG = typer.Argument(
    ..., help="Run directories, directories of runs (searched recursively) or trajectory files."
)
_FIGURES_OUT = typer.Option(Path("figures"), "--out", help="Folder to write the figures into.")
_FORMATS = typer.Option("png", "--format", help="Comma-separated figure formats: png, pdf, svg.")
_REPORT_OUT = typer.Option(..., "--out", help="Report folder, for example reports/ffhq-babies.")


def _stop(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=1)


@app.command()
def plot(runs: list[Path] = _RUNS_ARG, out: Path = _FIGURES_OUT, fmt: str = _FORMATS) -> None:
    """Draw the realism, diversity, quality-diversity, replication and sample figures."""
    import matplotlib

    matplotlib.use("Agg")
    from adaptscope.track.store import load_trajectories
    from adaptscope.viz.figures import make_figures, parse_formats

    try:
        formats = parse_formats(fmt)
        df = load_trajectories(runs)
    except ValueError as exc:
        raise _stop(exc) from exc
    result = make_figures(df, out, formats)
    for path in result.written:
        typer.echo(str(path))
    for reason in result.skipped:
        typer.echo(f"skipped {reason}", err=True)


@app.command()
def report(runs: list[Path] = _RUNS_ARG, out: Path = _REPORT_OUT, fmt: str = _FORMATS) -> None:
    """Write figures, the summary table (Markdown, CSV) and an index.html with the protocol."""
    import matplotlib

    matplotlib.use("Agg")
    from adaptscope.viz.report import write_report

    try:
        result = write_report(runs, out, fmt.split(","))
    except ValueError as exc:
        raise _stop(exc) from exc
    for path in [*result.figures.written, result.summary_csv, result.summary_md, result.index]:
        typer.echo(str(path))
    for reason in result.figures.skipped:
        typer.echo(f"skipped {reason}", err=True)


if __name__ == "__main__":
    app()
