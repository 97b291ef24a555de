"""StyleGAN2 in pure PyTorch with the reference checkpoint layout: networks, strict checkpoint
loading and saving, and the fixed-latent sampler. Knows nothing of methods, metrics or runs."""

from adaptscope.errors import CheckpointError
from adaptscope.models.checkpoint import (
    LoadedCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from adaptscope.models.sampling import FixedLatents
from adaptscope.models.stylegan2 import Discriminator, Generator, reference_channels

__all__ = [
    "CheckpointError",
    "Discriminator",
    "FixedLatents",
    "Generator",
    "LoadedCheckpoint",
    "load_checkpoint",
    "reference_channels",
    "save_checkpoint",
]
