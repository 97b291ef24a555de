"""Diffusion generators: an epsilon-predicting denoiser with its noise schedule, the deterministic
DDIM sampler evaluation uses, the seeded initial noise it starts from, and the embedded model's
own checkpoint format.

A `DiffusionModel` wraps any UNet that maps (x_t, t) to a prediction of the added noise: a
diffusers `UNet2DModel` (the embedded model, diffusers-format folders) or the port of
guided-diffusion's UNet (ADM checkpoints, `adaptscope.models.adm`, whose learned-variance half of
the output is dropped). Sampling is DDIM with eta 0 through diffusers' `DDIMScheduler` built from
the model's own schedule, so a sample depends only on its initial noise, the weights and the
number of steps: sample k at iteration t is comparable across methods and iterations, as a
GAN's fixed latents are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adaptscope.errors import CheckpointError
from adaptscope.files import load_weights_only, save_torch

FORMAT_TAG = "adaptscope-diffusion-1"
# The DDPM schedule of Ho et al. 2020 and of guided-diffusion's FFHQ / ADM models.
DEFAULT_SCHEDULE: dict[str, Any] = {"num_train_timesteps": 1000, "beta_start": 0.0001,
                                    "beta_end": 0.02, "beta_schedule": "linear",
                                    "prediction_type": "epsilon"}
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                 "prediction_type", "trained_betas", "timestep_spacing", "steps_offset")


def _betas(schedule: dict[str, Any]) -> torch.Tensor:
    n = int(schedule["num_train_timesteps"])
    kind = schedule.get("beta_schedule", "linear")
    if schedule.get("trained_betas") is not None:
        return torch.tensor(schedule["trained_betas"], dtype=torch.float64)
    if kind == "linear":
        return torch.linspace(schedule["beta_start"], schedule["beta_end"], n,
                              dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(schedule["beta_start"] ** 0.5, schedule["beta_end"] ** 0.5, n,
                              dtype=torch.float64) ** 2
    raise CheckpointError(f"beta_schedule {kind!r} is not supported: use 'linear' or "
                          "'scaled_linear', or give trained_betas")


class DiffusionModel(nn.Module):
    """An epsilon-predicting UNet and the noise schedule it was trained with.

    `unet(x_t, t)` may return a tensor or a diffusers output (`.sample`); an output with twice
    the image channels (a learned variance, as ADM's) keeps its first half, the noise.
    """

    family = "diffusion"

    def __init__(self, unet: nn.Module, schedule: dict[str, Any] | None = None,
                 size: int | None = None, kind: str = "diffusers"):
        super().__init__()
        self.unet = unet
        self.schedule = {k: v for k, v in {**DEFAULT_SCHEDULE, **(schedule or {})}.items()
                         if k in SCHEDULE_KEYS}
        if self.schedule.get("prediction_type", "epsilon") != "epsilon":
            raise CheckpointError(
                f"prediction_type {self.schedule['prediction_type']!r} is not supported: "
                "adaptscope trains and samples epsilon-predicting models")
        alphas_cumprod = torch.cumprod(1.0 - _betas(self.schedule), 0)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self.size = int(size if size is not None else unet.config.sample_size)
        self.kind = kind
        self.channels = 3

    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    @property
    def num_train_timesteps(self) -> int:
        return int(self.schedule["num_train_timesteps"])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The predicted noise of `x_t` at timesteps `t` (one per image)."""
        out = self.unet(x_t, t)
        out = getattr(out, "sample", out)
        if out.shape[1] == 2 * x_t.shape[1]:  # a learned variance follows the noise
            out = out[:, : x_t.shape[1]]
        return out

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (Ho et al. 2020, eq. 4)."""
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def sampler(self, steps: int, precision: str = "float32",
                noise: str = "model") -> DDIMSampler:
        return DDIMSampler(self, steps, precision, noise)


@dataclass
class Denoised:
    """One draw of the DDPM objective: the timesteps, the noise added, the noisy images, the
    predicted noise and the mean squared error between them (Ho et al. 2020, eq. 14)."""

    t: torch.Tensor
    noise: torch.Tensor
    x_t: torch.Tensor
    eps: torch.Tensor
    loss: torch.Tensor


def denoising_loss(model: DiffusionModel, x0: torch.Tensor,
                   denoiser: nn.Module | None = None) -> Denoised:
    """|| eps - eps_theta(x_t, t) ||^2 at one uniform timestep per image, drawn from the global
    RNG (t, then the noise), so a seeded run draws the same on every resume. `denoiser` (default:
    `model`) predicts the noise: an adapted view of the model (LoRA) on the model's schedule."""
    t = torch.randint(0, model.num_train_timesteps, (len(x0),), device=x0.device)
    noise = torch.randn_like(x0)
    x_t = model.add_noise(x0, noise, t)
    eps = (denoiser if denoiser is not None else model)(x_t, t)
    return Denoised(t, noise, x_t, eps, (eps - noise).pow(2).mean())


def predicted_x0(model: DiffusionModel, x_t: torch.Tensor, eps: torch.Tensor,
                 t: torch.Tensor) -> torch.Tensor:
    """The clean image the noise prediction implies: (x_t - sqrt(1 - abar) eps) / sqrt(abar)."""
    abar = model.alphas_cumprod[t].view(-1, 1, 1, 1)
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()


class DDIMSampler:
    """Deterministic DDIM (eta 0) with diffusers' scheduler over the model's own schedule.

    Each step clips the predicted clean image to [-1, 1]. `noise` says what noise the step
    carries on: "model", the model's own prediction (diffusers' DDIM default,
    `use_clipped_model_output=False`), or "clipped", the noise re-derived from the clipped image,
    as guided-diffusion's `ddim_sample` does (`clip_denoised=True`, then
    `_predict_eps_from_xstart`), the sampler CRDI and Uni-DAD evaluate ADM models with. The
    scheduler holds no randomness at eta 0, so one instance serves every evaluation."""

    def __init__(self, model: DiffusionModel, steps: int, precision: str = "float32",
                 noise: str = "model"):
        from diffusers import DDIMScheduler

        if steps < 1 or steps > model.num_train_timesteps:
            raise ValueError(f"sampler steps = {steps}: use 1..{model.num_train_timesteps}")
        if precision not in ("float32", "bfloat16"):
            raise ValueError(f"sampler precision = {precision!r}: use float32 or bfloat16")
        if noise not in ("model", "clipped"):
            raise ValueError(f"sampler noise = {noise!r}: use model or clipped")
        self.model = model
        self.steps = steps
        self.precision = precision
        self.noise = noise
        self.scheduler = DDIMScheduler(**model.schedule, clip_sample=True,
                                       set_alpha_to_one=False)
        self.scheduler.set_timesteps(steps)

    @torch.no_grad()
    def __call__(self, noise: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        """Images in [-1, 1] from initial noise x_T; `model` (default: the sampler's) predicts
        the noise, so an adapted denoiser is sampled on the same schedule."""
        denoise = model if model is not None else self.model
        x = noise
        for t in self.scheduler.timesteps:
            with torch.autocast(x.device.type, torch.bfloat16,
                                enabled=self.precision == "bfloat16"):
                eps = denoise(x, t.expand(len(x)).to(x.device)).float()
            x = self.scheduler.step(eps, t, x, eta=0.0,
                                    use_clipped_model_output=self.noise == "clipped"
                                    ).prev_sample
        return x.clamp(-1, 1)


class FixedNoise:
    """A seeded stream of initial noise x_T for a diffusion model: the diffusion family's fixed
    latents. Drawn on the CPU from a private generator, so a stream depends only on the seed and
    the sequence of batch sizes, never on the training RNG."""

    def __init__(self, size: int, seed: int, channels: int = 3):
        self.size, self.channels = size, channels
        self.rng = torch.Generator().manual_seed(seed)

    def draw(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.channels, self.size, self.size, generator=self.rng)

    def batches(self, total: int, batch_size: int) -> Iterator[torch.Tensor]:
        done = 0
        while done < total:
            n = min(batch_size, total - done)
            yield self.draw(n)
            done += n


@dataclass
class LoadedDiffusion:
    """A diffusion source: the model, where it came from, and the file's extra entries."""

    path: Path
    kind: str
    model: DiffusionModel
    extra: dict[str, Any]


def build_unet(config: dict[str, Any]) -> nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel.from_config(config)


def save_diffusion(path: str | os.PathLike, model: DiffusionModel, **extra: Any) -> None:
    """Save a diffusers-UNet model in adaptscope's format: the UNet's config and weights, the
    schedule, and any plain data or tensors in `extra` (written atomically)."""
    obj = {"format": FORMAT_TAG, "unet_config": dict(model.unet.config),
           "unet": model.unet.state_dict(), "schedule": dict(model.schedule), **extra}
    save_torch(obj, path)


def load_diffusion(path: str | os.PathLike) -> LoadedDiffusion:
    """A diffusion model saved by `save_diffusion`, loaded strictly on the CPU."""
    p = Path(path)
    obj = load_weights_only(p, what="diffusion checkpoint", error=CheckpointError,
                            fix="give a file written by adaptscope (save_diffusion), a "
                                "diffusers folder or an ADM checkpoint")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_TAG:
        raise CheckpointError(f"{p}: not an adaptscope diffusion checkpoint (no format tag "
                              f"{FORMAT_TAG!r})")
    unet = build_unet(obj["unet_config"])
    try:
        unet.load_state_dict(obj["unet"], strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{p}: the UNet weights do not match its config ({err})") from err
    model = DiffusionModel(unet, obj.get("schedule"))
    extra = {k: v for k, v in obj.items()
             if k not in ("format", "unet_config", "unet", "schedule")}
    return LoadedDiffusion(p, "adaptscope", model, extra)
