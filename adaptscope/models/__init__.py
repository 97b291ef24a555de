"""StyleGAN2 in pure PyTorch with the reference checkpoint layout."""

from adaptscope.models.checkpoint import (
    CheckpointError,
    LoadedCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from adaptscope.models.stylegan2 import Discriminator, Generator, reference_channels

__all__ = [
    "CheckpointError",
    "Discriminator",
    "Generator",
    "LoadedCheckpoint",
    "load_checkpoint",
    "reference_channels",
    "save_checkpoint",
]
