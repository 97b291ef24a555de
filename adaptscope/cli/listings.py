"""Commands that only read and list: the registered methods, the state of a folder of runs, the
evaluation protocols."""

from __future__ import annotations

from pathlib import Path

import typer

from adaptscope.cli.common import PLUGIN_OPTION, app, rich_console
from adaptscope.errors import ConfigError


@app.command("methods")
def list_methods(plugin: list[str] = PLUGIN_OPTION) -> None:
    """List the registered adaptation methods by generator family, with their hyperparameters."""
    from adaptscope.methods import METHODS
    from adaptscope.methods.base import param_docs
    from adaptscope.methods.plugins import import_plugins

    import_plugins(plugin)

    width = max(len(name) for name in METHODS) + 1
    families = {"gan": "GAN methods (a StyleGAN2 source)",
                "diffusion": "Diffusion methods (a diffusion-model source)"}
    names = sorted(METHODS, key=lambda n: (METHODS[n].family != "gan", METHODS[n].family, n))
    for i, name in enumerate(names):
        cls = METHODS[name]
        if i == 0 or METHODS[names[i - 1]].family != cls.family:
            typer.echo(("" if i == 0 else "\n") + families.get(cls.family, cls.family))
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
    console = rich_console()
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
        prdc = ("precision/recall k = 3, density/coverage k = 5" if p.prdc_k is None
                else f"all four from prdc at k = {p.prdc_k}")
        typer.echo(f"  PRDC: {prdc}")
        if p.cmmd_backbone is not None:
            typer.echo(f"  CMMD: {p.cmmd_backbone} (biased and unbiased), same sets as FID")
        typer.echo(f"  intra-LPIPS: {p.lpips_backbone} on {p.lpips_n_samples:,} samples, {rule}")
        typer.echo(f"  cheap evaluations: {p.cheap_n_samples} samples")
        typer.echo(f"  used by: {p.used_by}")
        for setting, source in p.sources.items():
            typer.echo(f"    {setting}: {source}")
        typer.echo("")
    typer.echo(f"{CUSTOM}: the metrics.* settings as a config gives them (recorded as such)")
