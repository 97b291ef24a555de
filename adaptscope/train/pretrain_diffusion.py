"""Pretraining the embedded world's small diffusion model on ToyFaces, resumably.

Recipe (defaults below, values in `experiments/pretrain-diffusion.toml`): a diffusers
`UNet2DModel` at 32 px with four levels (16, 32, 64, 64 channels, one ResNet block each,
self-attention at 4 x 4 only), about 1.1 M parameters (4.4 MB), chosen so that 1,000 DDIM
samples of 10 steps take about 15-40 s on one CPU core; the DDPM objective (predict the noise,
mean squared error) on the linear schedule of Ho et al. (1,000 steps, beta 1e-4 to 0.02); Adam at
a constant learning rate with gradients clipped at norm 1 (as diffusers' training examples), and
an exponential moving average of the weights, which is what is shipped. Every step renders a
fresh slice of the ToyFaces source range, as the source StyleGAN2's pretraining does, so the
model never sees a target identity. A checkpoint every `checkpoint_every` steps holds everything
needed to continue bit-for-bit.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adaptscope.embedded import toyfaces
from adaptscope.images import save_grid, to_uint8
from adaptscope.models.diffusion import (
    DEFAULT_SCHEDULE,
    DiffusionModel,
    FixedNoise,
    build_unet,
    denoising_loss,
    load_diffusion,
    save_diffusion,
)


@dataclass
class DiffusionModelConfig:
    """Architecture of the toy diffusion model (a diffusers UNet2DModel)."""

    size: int = 32
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 64])
    attention_levels: list[int] = field(default_factory=lambda: [3])  # 0 = full resolution
    layers_per_block: int = 1
    norm_groups: int = 8

    def unet_config(self) -> dict[str, Any]:
        levels = range(len(self.channels))
        down = [("AttnDownBlock2D" if i in self.attention_levels else "DownBlock2D")
                for i in levels]
        return {"sample_size": self.size, "in_channels": 3, "out_channels": 3,
                "layers_per_block": self.layers_per_block,
                "block_out_channels": list(self.channels),
                "down_block_types": down,
                "up_block_types": [b.replace("Down", "Up") for b in reversed(down)],
                "norm_num_groups": self.norm_groups, "attention_head_dim": None}


@dataclass
class DiffusionPretrainConfig:
    model: DiffusionModelConfig = field(default_factory=DiffusionModelConfig)
    domain: str = "source"
    steps: int = 30000
    batch: int = 32
    lr: float = 0.0005
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 250
    sample_every: int = 1000
    sample_steps: int = 10  # DDIM steps of the sample grids written along the way
    threads: int = 1


def build_model(cfg: DiffusionModelConfig) -> DiffusionModel:
    return DiffusionModel(build_unet(cfg.unet_config()), dict(DEFAULT_SCHEDULE))


def _real_batch(cfg: DiffusionPretrainConfig, step: int) -> torch.Tensor:
    start = toyfaces.SOURCE_RANGE.start + step * cfg.batch
    return toyfaces.render_tensor(cfg.domain, range(start, start + cfg.batch), cfg.model.size)


def pretrain_diffusion(cfg: DiffusionPretrainConfig, out_dir: str | Path, *,
                       log: Callable[[str], Any] = print) -> Path:
    """Train (or resume) the toy diffusion model in `out_dir`; returns the checkpoint path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    model = build_model(cfg.model).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step = 0
    if ckpt_path.exists():
        ck = load_diffusion(ckpt_path)
        model.unet.load_state_dict(ck.model.unet.state_dict())
        ema.unet.load_state_dict(ck.extra["ema"])
        opt.load_state_dict(ck.extra["optimizer"])
        torch.set_rng_state(ck.extra["torch_rng"])
        step = int(ck.extra["step"])
        log(f"resumed from {ckpt_path} at step {step}")

    grid_noise = FixedNoise(cfg.model.size, 1234).draw(32)
    t0 = time.perf_counter()
    running = 0.0
    with (out / "log.jsonl").open("a") as log_file:
        while step < cfg.steps:
            loss = denoising_loss(model, _real_batch(cfg, step)).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                    p_ema.lerp_(p, 1 - cfg.ema_decay)
            running += loss.item()
            step += 1
            if step % 50 == 0:
                rec = {"step": step, "images": step * cfg.batch, "loss": running / 50,
                       "sec": round(time.perf_counter() - t0, 1)}
                log_file.write(json.dumps(rec) + "\n")
                log_file.flush()
                running = 0.0
            if step % cfg.sample_every == 0 or step == cfg.steps:
                sample = ema.sampler(cfg.sample_steps)(grid_noise)
                save_grid(to_uint8(sample), out / f"samples_{step:06d}.png", scale=2)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_diffusion(ckpt_path, model, ema=ema.unet.state_dict(),
                               optimizer=opt.state_dict(), torch_rng=torch.get_rng_state(),
                               step=step)
                log(f"step {step}/{cfg.steps}  loss {loss.item():.4f}  "
                    f"{time.perf_counter() - t0:.0f}s")
    return ckpt_path


def export_diffusion(checkpoint: str | Path, out: str | Path, meta: dict | None = None) -> None:
    """Write the shipped model: the moving average's weights and the schedule, nothing else."""
    ck = load_diffusion(checkpoint)
    ck.model.unet.load_state_dict(ck.extra["ema"])
    save_diffusion(out, ck.model, step=int(ck.extra.get("step", 0)),
                   meta=json.dumps(meta or {}))
