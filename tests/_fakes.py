"""Stand-ins shared by tests that need a generator with known outputs."""

from __future__ import annotations

import torch
from torch import nn


class ImagesAsGenerator(nn.Module):
    """Returns `pool[i % len(pool)]` for the i-th latent it is asked for, whatever the latent."""

    def __init__(self, pool: torch.Tensor):
        super().__init__()
        self.pool = pool
        self.style_dim = 8
        self.anchor = nn.Parameter(torch.zeros(1))
        self.drawn = 0

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def make_noise(self, batch: int, generator: torch.Generator | None = None) -> list:
        return []

    def fixed_batches(self, seed: int, total: int, batch_size: int):
        from adaptscope.models.sampling import fixed_latent_batches

        return fixed_latent_batches(self, seed, total, batch_size)

    def generate(self, inputs) -> torch.Tensor:
        return self([inputs.z], noise=inputs.noise)[0]

    def forward(self, styles, noise=None):
        n = styles[0].shape[0]
        idx = torch.arange(self.drawn, self.drawn + n) % len(self.pool)
        self.drawn += n
        return self.pool[idx], None
