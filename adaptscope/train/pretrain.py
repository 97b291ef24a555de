"""Pretraining the embedded world's small source StyleGAN2 on ToyFaces, resumably.

Recipe (defaults below, values in `experiments/pretrain-source.toml`): the small-resolution
StyleGAN2 configuration of NVIDIA's StyleGAN2-ADA for 32 px (CIFAR-10: 2 mapping layers,
learning rate 0.0025, no path-length regularisation, no style mixing) with an EMA half-life of
10k images ramped up over the first images, as that configuration does. R1 gamma is 0.1: the
256 px FFHQ value (10) is far too strong at 32 px, and that configuration's 0.01 let the
discriminator win outright at batch 16 without augmentation. Each step is the shared GAN step
(`adaptscope.train.step`) with no method, so R1 is a separate lazy step as in adaptation; the
shipped model was trained before that, with R1 added to the logistic loss's D step.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adaptscope.embedded import toyfaces
from adaptscope.images import save_grid, to_uint8
from adaptscope.methods import Method, MethodContext
from adaptscope.models import Discriminator, Generator, load_checkpoint, save_checkpoint
from adaptscope.spec import LoopSpec
from adaptscope.train.state import restore
from adaptscope.train.step import GANStep


@dataclass
class SourceModelConfig:
    """Architecture of the toy source model: one width at every resolution."""

    size: int = 32
    style_dim: int = 128
    n_mlp: int = 2
    width: int = 64
    lr_mlp: float = 0.01

    def channels(self) -> dict[int, int]:
        return {2**i: self.width for i in range(2, self.size.bit_length())}


@dataclass
class PretrainConfig:
    model: SourceModelConfig = field(default_factory=SourceModelConfig)
    domain: str = "source"
    steps: int = 12000
    batch: int = 16
    lr: float = 0.0025
    r1_gamma: float = 0.1
    r1_every: int = 16
    ema_half_life_images: float = 10_000.0
    ema_rampup: float = 0.05  # half-life <= rampup * images seen (StyleGAN2-ADA's ramp-up)
    seed: int = 0
    checkpoint_every: int = 250
    sample_every: int = 1000
    threads: int = 1


def build_networks(cfg: SourceModelConfig) -> tuple[Generator, Discriminator]:
    channels = cfg.channels()
    g = Generator(cfg.size, cfg.style_dim, cfg.n_mlp, lr_mlp=cfg.lr_mlp, channels=channels)
    d = Discriminator(cfg.size, channels=channels)
    return g, d


def _real_batch(cfg: PretrainConfig, step: int) -> torch.Tensor:
    # A fresh, deterministic slice of the source domain per step: no dataset to store.
    start = toyfaces.SOURCE_RANGE.start + step * cfg.batch
    return toyfaces.render_tensor(cfg.domain, range(start, start + cfg.batch), cfg.model.size)


def pretrain_source(cfg: PretrainConfig, out_dir: str | Path, *, log=print) -> Path:
    """Train (or resume) the source model in `out_dir`; returns the checkpoint path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    g, d = build_networks(cfg.model)
    g_ema, _ = build_networks(cfg.model)
    g_ema.load_state_dict(g.state_dict())
    g_ema.eval().requires_grad_(False)
    # Pretraining is the shared GAN step with no method: plain latents, image-level D, no
    # source networks, no path-length regularisation or mixing (the 32 px recipe).
    loop = LoopSpec(batch=cfg.batch, lr=cfg.lr, r1_gamma=cfg.r1_gamma, r1_every=cfg.r1_every,
                    path_regularize=0.0, mixing=0.0)
    method = Method(Method.Params(), MethodContext(g=g, d=d, mixing=0.0))
    train_step = GANStep(g, d, g_ema, method, loop)
    step = 0
    if ckpt_path.exists():
        step = int(restore(ckpt_path, g, d, g_ema, train_step.g_opt, train_step.d_opt)["step"])
        log(f"resumed from {ckpt_path} at step {step}")

    fixed_z = torch.randn(32, cfg.model.style_dim, generator=torch.Generator().manual_seed(1234))
    t0 = time.perf_counter()
    last_r1 = None  # null in the log when R1 is off
    with (out / "log.jsonl").open("a") as log_file:
        while step < cfg.steps:
            images = (step + 1) * cfg.batch
            half_life = min(cfg.ema_half_life_images, cfg.ema_rampup * images)
            losses = train_step(step, _real_batch(cfg, step),
                                ema_decay=0.5 ** (cfg.batch / max(half_life, 1e-8)))
            if "loss_r1" in losses:
                last_r1 = losses["loss_r1"].item()  # logged until the next lazy R1 step
            step += 1
            if step % 50 == 0:
                rec = {"step": step, "images": images, "d_loss": losses["loss_d_adv"].item(),
                       "g_loss": losses["loss_g_adv"].item(), "r1": last_r1,
                       "sec": round(time.perf_counter() - t0, 1)}
                log_file.write(json.dumps(rec) + "\n")
                log_file.flush()
            if step % cfg.sample_every == 0 or step == cfg.steps:
                with torch.no_grad():
                    sample, _ = g_ema([fixed_z])
                save_grid(to_uint8(sample), out / f"samples_{step:06d}.png", scale=2)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_checkpoint(ckpt_path, g_ema=g_ema, g=g, d=d,
                                g_optim=train_step.g_opt.state_dict(),
                                d_optim=train_step.d_opt.state_dict(),
                                torch_rng=torch.get_rng_state(), step=step)
                log(f"step {step}/{cfg.steps}  d {losses['loss_d_adv'].item():.3f}  "
                    f"g {losses['loss_g_adv'].item():.3f}  {time.perf_counter() - t0:.0f}s")
    return ckpt_path


def export_source(checkpoint: str | Path, out: str | Path, meta: dict | None = None) -> None:
    """Write the shipped source model (`g`, `d`, `g_ema` and their configs; no optimisers)."""
    ck = load_checkpoint(checkpoint)
    save_checkpoint(out, g_ema=ck.g_ema, g=ck.g, d=ck.d, step=int(ck.extra.get("step", 0)),
                    meta=json.dumps(meta or {}))
