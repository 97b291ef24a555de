"""A tiny diffusion source (a seeded 16 px diffusers UNet2DModel) for tests that run in seconds."""

from __future__ import annotations

from pathlib import Path

import torch

from adaptscope.models.diffusion import DiffusionModel, build_unet, save_diffusion

TINY_UNET = {"sample_size": 16, "in_channels": 3, "out_channels": 3, "layers_per_block": 1,
             "block_out_channels": [8, 16], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
             "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 4,
             "attention_head_dim": None}
# A short schedule keeps DDIM sampling of the tests' few steps meaningful.
TINY_SCHEDULE = {"num_train_timesteps": 100, "beta_start": 0.001, "beta_end": 0.2,
                 "beta_schedule": "linear"}


def tiny_diffusion(seed: int = 0) -> DiffusionModel:
    """A seeded, untrained tiny diffusion model."""
    torch.manual_seed(seed)
    return DiffusionModel(build_unet(TINY_UNET), TINY_SCHEDULE)


def make_diffusion_source(path: Path, seed: int = 0) -> Path:
    """The tiny model saved as a diffusion source checkpoint (adaptscope's format)."""
    save_diffusion(path, tiny_diffusion(seed))
    return path
