"""The `adaptscope` command line: one typer application, thin wrappers over the library."""

from __future__ import annotations

import contextvars
import errno
import os
import re
import traceback
from pathlib import Path
from typing import IO, Any

import typer
from typer.core import TyperGroup

from adaptscope.errors import EXIT_RUN_FAILED, AdaptscopeError, ConfigError

try:
    from typer._click.exceptions import ClickException  # typer vendors click since 0.2x
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click import ClickException

DEBUG_ENV = "ADAPTSCOPE_DEBUG"


class UserError(ClickException):
    """An AdaptscopeError as the CLI shows it: one `error:` line (plus its traceback when
    ADAPTSCOPE_DEBUG=1), and the error's exit code."""

    def __init__(self, error: AdaptscopeError) -> None:
        text = re.sub(r"\s*[\r\n]+\s*", " ", str(error).strip()) or type(error).__name__
        super().__init__(text)
        self.error = error
        self.exit_code = error.exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            typer.echo("".join(traceback.format_exception(self.error)).rstrip(), file=file,
                       err=file is None)
        typer.echo(f"error: {self.message}", file=file, err=file is None)


_STANDALONE: contextvars.ContextVar[bool] = contextvars.ContextVar("standalone", default=False)


class ErrorHandlingGroup(TyperGroup):
    """Turns an AdaptscopeError raised by any command below it into a `UserError`.

    In standalone mode (the command line, `CliRunner`) the error is shown here and the process
    exits with its code: typer would otherwise draw click errors in a multi-line rich panel.
    Called with `standalone_mode=False`, the `UserError` is raised to the caller instead.
    """

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        token = _STANDALONE.set(standalone_mode)
        try:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        finally:
            _STANDALONE.reset(token)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except AdaptscopeError as err:
            self._fail(err, err)
        except OSError as err:  # an unwritable or missing path, a full disk: bad input, one line
            if isinstance(err, BrokenPipeError) or err.errno == errno.EPIPE:
                raise  # click handles a closed pipe (`adaptscope methods | head`)
            wrapped = AdaptscopeError(describe_os_error(err))
            wrapped.__cause__ = err  # ADAPTSCOPE_DEBUG=1 shows where it was raised
            self._fail(wrapped, err)

    @staticmethod
    def _fail(error: AdaptscopeError, cause: BaseException) -> None:
        shown = UserError(error)
        if not _STANDALONE.get():
            raise shown from cause
        shown.show()
        raise typer.Exit(shown.exit_code) from cause


def describe_os_error(err: OSError) -> str:
    """An OSError as one line naming its path(s) and the operating system's reason."""
    reason = err.strerror or str(err) or type(err).__name__
    if err.filename is None:
        return reason
    where = os.fsdecode(err.filename)
    if err.filename2 is not None:
        where += f" -> {os.fsdecode(err.filename2)}"
    return f"{where}: {reason}"


def _console() -> Any:
    """A rich console that prints text as given: no markup in paths (`[b]`) and no emoji codes
    (`toyfaces:sunglasses:`) are interpreted, nothing is highlighted."""
    from rich.console import Console

    return Console(emoji=False, highlight=False)


def _typer(help: str, **kwargs: Any) -> typer.Typer:
    return typer.Typer(help=help, no_args_is_help=True, cls=ErrorHandlingGroup,
                       pretty_exceptions_enable=False, **kwargs)


app = _typer("Track realism and diversity of GANs adapting to a new domain from a few images.",
             add_completion=False)
data_app = _typer("Datasets: the embedded ToyFaces world and image folders.")
pretrain_app = _typer("Rebuild the embedded world's shipped models.")
realism_app = _typer("The realism classifier p_t for real target domains.")
app.add_typer(data_app, name="data")
app.add_typer(pretrain_app, name="pretrain")
app.add_typer(realism_app, name="realism")
calibrate_app = _typer("Calibrate a method's settings to a model by short probe runs.")
app.add_typer(calibrate_app, name="calibrate")


def _given(**values: Any) -> dict[str, Any]:
    """The options that were given (not None), for `set_values`: dotted key -> typed value."""
    return {key.replace("__", "."): value for key, value in values.items() if value is not None}


def _split(text: str | None) -> list[str] | None:
    """'tgan, cdc' -> ['tgan', 'cdc']; None stays None."""
    return None if text is None else [v.strip() for v in text.split(",") if v.strip()]


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
    from adaptscope.embedded import toyfaces

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

    from adaptscope.config import apply_overrides, from_dict, read_toml, set_values
    from adaptscope.embedded.toynet_training import ToyNetRecipe, train_toynet

    data = apply_overrides(read_toml(config) if config.exists() else {}, set_)
    data = set_values(data, _given(steps=steps, seed=seed))
    r = from_dict(ToyNetRecipe, data, str(config))
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
    from adaptscope.config import apply_overrides, from_dict, read_toml, set_values, to_dict
    from adaptscope.train.pretrain import PretrainConfig, export_source, pretrain_source

    data = apply_overrides(read_toml(config) if config.exists() else {}, set_)
    cfg = from_dict(PretrainConfig, set_values(data, _given(steps=steps)), str(config))
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
    from adaptscope.train.realism_classifier import source_sampler, train_realism_classifier

    if (source is None) == (source_checkpoint is None):
        raise typer.BadParameter("give exactly one of --source and --source-checkpoint")
    sampler = None if source_checkpoint is None else source_sampler(
        source_checkpoint, seed=seed, device=device)
    result = train_realism_classifier(
        target, source, out, sample_source=sampler, n_source=n_source, image_size=size,
        epochs=epochs, batch_size=batch_size, seed=seed, pretrained=pretrained,
        weights_dir=weights_dir, device=device, log=typer.echo,
    )
    typer.echo(f"wrote {result.path}: held-out accuracy {result.val_accuracy:.4f} on "
               f"{result.n_val} images (trunk initialised from {result.init})")


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
                              iterations, seed, out, _console())
    if any(p.error for p in probes):
        raise typer.Exit(EXIT_RUN_FAILED)


# --- run / methods commands ------------------------------------------------------------------

def _target_spec(value: str) -> str:
    """'babies' -> 'toyfaces:babies'; folders, zips and 'toyfaces:...' pass through."""
    from adaptscope.embedded import toyfaces

    if ":" not in value and not Path(value).exists() and value in toyfaces.DOMAINS:
        return f"toyfaces:{value}"
    return value


_PLUGIN = typer.Option(
    [], "--plugin", help="A .py file or module registering methods of your own (repeatable).")
_PROTOCOL = typer.Option(
    None, help="Evaluation protocol, e.g. dcl-paper (`adaptscope protocols` lists them).")


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
    protocol: str | None = _PROTOCOL,
    executor: str | None = typer.Option(
        None, help="local (processes here, the default) or slurm (one job array)."),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="slurm: follow the jobs until they end (--no-wait "
        "returns after submitting)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value: key=value."),
    plugin: list[str] = _PLUGIN,
) -> None:
    """Adapt the source model with each method and seed, tracking realism and diversity."""
    from rich.markup import escape

    from adaptscope.train import runner
    from adaptscope.train.experiment import load_experiment
    from adaptscope.train.preflight import check_before_writing

    console = _console()
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
    values = _given(methods=_split(methods), seeds=seed_list,
                    target__data=target and _target_spec(target), schedule__iterations=iterations,
                    schedule__eval_every=eval_every, device=device, workers=workers,
                    metrics__protocol=protocol, executor__kind=executor)
    if resume:
        _refuse_changes_on_resume(methods=methods, config=config, target=target, seeds=seeds,
                                  iterations=iterations, eval_every=eval_every, device=device,
                                  protocol=protocol, set_=set_, plugin=plugin)
        planned = runner.plan_resume(out)
        if not planned:
            console.print(f"nothing to resume under {escape(str(out))}")
        n_workers = workers or runner.default_workers(planned, planned[0].spec.device
                                                      if planned else "cpu")
        settings = _resume_executor(executor, out)
    else:
        cfg = load_experiment(config, set_, plugin, values=values)
        _say_protocol(cfg, console)
        planned = runner.plan_experiment(cfg, out, console)
        n_workers = cfg.workers or runner.default_workers(planned, cfg.device)
        settings = cfg.executor
    check_before_writing([r for r in planned if r.status != "complete"], out)
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
    _print_run_summary(planned, out, console)
    if any(r.status == "failed" for r in planned):
        raise typer.Exit(EXIT_RUN_FAILED)


def _say_protocol(cfg, console) -> None:
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

    from adaptscope.train import slurm

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
            escape(f"{r.spec.method} s{r.spec.seed}"), total=r.spec.schedule.iterations,
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


def _print_run_summary(planned, out: Path, console) -> None:
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
        table.add_row(escape(last["method"]), str(last["seed"]), escape(last["target"]),
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
    protocol: str | None = _PROTOCOL,
    set_: list[str] = typer.Option([], "--set", help="Override a config value: key=value."),
) -> None:
    """Track a run trained elsewhere: evaluate its saved checkpoints under the same protocol."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from adaptscope.track.external import find_checkpoints, track_checkpoints
    from adaptscope.train import runner
    from adaptscope.train.experiment import load_experiment
    from adaptscope.train.preflight import check_track

    console = _console()
    if not method.strip():
        raise ConfigError("--method is empty: give a label such as cdc-official")
    values = {"methods": [], **_given(target__data=target and _target_spec(target), device=device,
                                      metrics__protocol=protocol)}
    cfg = load_experiment(config, set_, values=values)
    _say_protocol(cfg, console)
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
    _print_run_summary([runner.PlannedRun(spec, run_dir)], out, console)


@app.command("methods")
def list_methods(plugin: list[str] = _PLUGIN) -> None:
    """List the registered adaptation methods and their hyperparameters."""
    from adaptscope.methods import METHODS
    from adaptscope.methods.base import param_docs
    from adaptscope.methods.plugins import import_plugins

    import_plugins(plugin)

    width = max(len(name) for name in METHODS) + 1
    for name in sorted(METHODS):
        cls = METHODS[name]
        typer.echo(f"{name:<{width}}{cls.summary}")
        for key, value in cls.loop_settings.items():  # what its code fixes in the shared loop
            typer.echo(f"{'':<{width}}{name}.train.{key} = {value!r}  (the method's own; "
                       f"[{name}.train] changes it)")
        for field_name, default, doc in param_docs(cls):
            typer.echo(f"{'':<{width}}{name}.{field_name} = {default!r}  {doc.split('. ')[0]}")


@app.command("status")
def status(out: Path = typer.Argument(..., help="Folder of run folders, e.g. runs/.")) -> None:
    """Where every run in a folder stands: queued, running, done, failed, unfinished or damaged."""
    from rich.markup import escape
    from rich.table import Table

    from adaptscope.track.status import STATES, folder_status
    from adaptscope.train.slurm import squeue_states

    if not out.is_dir():
        raise ConfigError(f"{out} is not a folder of runs; give the --out folder of `adaptscope "
                          "run`")
    console = _console()
    statuses = folder_status(out, squeue_states)
    if not statuses:
        console.print(f"no runs under {escape(str(out))}")
        return
    table = Table(title=f"Runs in {escape(str(out))}/")
    for col in ("run", "method", "seed", "target", "last iteration", "state", "job"):
        table.add_column(col)
    for s in statuses:
        last = "-" if s.iteration is None else f"{s.iteration} ({s.evaluation})"
        table.add_row(escape(s.run_id), escape(s.method), "" if s.seed is None else str(s.seed),
                      escape(s.target), last, s.state, escape(s.job_id))
    console.print(table)
    counts = {state: sum(s.state == state for s in statuses) for state in STATES}
    console.print(", ".join(f"{n} {state}" for state, n in counts.items() if n))
    for s in statuses:
        if s.state in ("failed", "damaged") and s.detail:
            console.print(f"\n{escape(s.run_id)} {s.state}:\n{escape(s.detail)}", markup=True,
                          highlight=False)


@app.command("protocols")
def list_protocols() -> None:
    """List the evaluation protocols: what each measures with, and where each setting is from."""
    from adaptscope.protocols import CUSTOM, PROTOCOLS

    for name, p in PROTOCOLS.items():
        rule = (f"{p.lpips_members} {p.lpips_max_per_cluster} per cluster, clusters under 2 "
                f"members: {p.lpips_small_clusters}")
        real = "the full target set" if p.fid_n_real == 0 else f"at most {p.fid_n_real:,} real"
        typer.echo(f"{name}\n  {p.description}")
        typer.echo(f"  FID, KID, PRDC: {p.fid_backbone}, {p.fid_n_gen:,} generated vs {real}")
        typer.echo(f"  intra-LPIPS: {p.lpips_backbone} on {p.lpips_n_samples:,} samples, {rule}")
        typer.echo(f"  cheap evaluations: {p.cheap_n_samples} samples")
        typer.echo(f"  used by: {p.used_by}")
        for setting, source in p.sources.items():
            typer.echo(f"    {setting}: {source}")
        typer.echo("")
    typer.echo(f"{CUSTOM}: the metrics.* settings as a config gives them (recorded as such)")


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
           x: str = _X_AXIS, align: str = _ALIGN) -> None:
    """Write figures, the summary table (Markdown, CSV) and an index.html with the protocol."""
    import matplotlib

    matplotlib.use("Agg")
    from adaptscope.viz.report import write_report

    x, align = _x_axis(x, align)
    result = write_report(runs, out, _formats(fmt), log=lambda line: typer.echo(line, err=True),
                          x=x, align=align)
    for path in [*result.figures.written, result.summary_csv, result.summary_md, result.index]:
        typer.echo(str(path))
    for reason in result.figures.skipped:
        typer.echo(f"skipped {reason}", err=True)
    for line in result.figures.warnings:
        typer.echo(f"warning: {line}", err=True)


if __name__ == "__main__":
    app()
