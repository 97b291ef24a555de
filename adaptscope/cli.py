"""The `adaptscope` command line: one typer application, thin wrappers over the library."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Track realism and diversity of GANs adapting to a new domain from a few images.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Datasets: the embedded ToyFaces world and image folders.", no_args_is_help=True)
pretrain_app = typer.Typer(help="Rebuild the embedded world's shipped models.", no_args_is_help=True)
realism_app = typer.Typer(help="The realism classifier p_t for real target domains.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(pretrain_app, name="pretrain")
app.add_typer(realism_app, name="realism")


@app.command()
def version() -> None:
    """Print the adaptscope version."""
    from adaptscope import __version__

    typer.echo(__version__)


# --- data commands ---------------------------------------------------------------------------

# --- pretrain commands -----------------------------------------------------------------------

# --- realism commands ------------------------------------------------------------------------

# --- run / methods commands ------------------------------------------------------------------

# --- plot / report commands ------------------------------------------------------------------


if __name__ == "__main__":
    app()
