"""What runs are built from: the `data`, `pretrain` and `realism` groups write datasets, the
embedded world's shipped models and the realism classifier."""

from __future__ import annotations

from pathlib import Path

import typer

from adaptscope.cli.common import app, make_typer, options_given

data_app = make_typer("Datasets: the embedded ToyFaces world and image folders.")
pretrain_app = make_typer("Rebuild the embedded world's shipped models.")
realism_app = make_typer("The realism classifier p_t for real target domains.")
app.add_typer(data_app, name="data")
app.add_typer(pretrain_app, name="pretrain")
app.add_typer(realism_app, name="realism")


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
    data = set_values(data, options_given(steps=steps, seed=seed))
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
    cfg = from_dict(PretrainConfig, set_values(data, options_given(steps=steps)), str(config))
    ckpt = pretrain_source(cfg, out, log=typer.echo)
    if export is not None:
        export_source(ckpt, export, meta={"recipe": to_dict(cfg)})
        typer.echo(f"wrote {export}")


@pretrain_app.command("diffusion")
def pretrain_diffusion_cmd(
    config: Path = typer.Option(Path("experiments/pretrain-diffusion.toml"),
                                help="Recipe (TOML)."),
    out: Path = typer.Option(Path("work/pretrain-diffusion"),
                             help="Training directory (resumes)."),
    steps: int | None = typer.Option(None, help="Override the number of steps."),
    export: Path | None = typer.Option(None, help="Write the finished model here (its EMA)."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe value: key=value."),
) -> None:
    """Train the embedded world's diffusion model on ToyFaces (resumable; hours on a CPU)."""
    from adaptscope.config import apply_overrides, from_dict, read_toml, set_values, to_dict
    from adaptscope.train.pretrain_diffusion import (
        DiffusionPretrainConfig,
        export_diffusion,
        pretrain_diffusion,
    )

    data = apply_overrides(read_toml(config) if config.exists() else {}, set_)
    cfg = from_dict(DiffusionPretrainConfig, set_values(data, options_given(steps=steps)),
                    str(config))
    ckpt = pretrain_diffusion(cfg, out, log=typer.echo)
    if export is not None:
        export_diffusion(ckpt, export, meta={"recipe": to_dict(cfg)})
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
