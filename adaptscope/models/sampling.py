"""Fixed latents: the one way a seeded stream of generator inputs is drawn.

Evaluation, sample grids, source-quality checks and the realism classifier's source samples all
draw latents z and per-layer noise maps here, from a private generator seeded once, so they never
perturb (or depend on) the training RNG and every method sees the same inputs for the same seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from adaptscope.models.stylegan2 import Generator


@dataclass
class LatentBatch:
    """One batch of a GAN's fixed inputs: z and its per-layer noise maps, cut together."""

    z: torch.Tensor
    noise: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, index: slice) -> LatentBatch:
        return LatentBatch(self.z[index], [maps[index] for maps in self.noise])


class FixedLatents:
    """A seeded stream of (z, noise maps) for generator `g`: z on the CPU, noise on g's device.

    Each `draw(n)` takes z (n, style_dim) and then the noise maps from the same stream, so a
    stream depends only on the seed and the sequence of batch sizes.
    """

    def __init__(self, g: Generator, seed: int):
        self.g = g
        self.seed = seed
        self.rng = torch.Generator().manual_seed(seed)

    def draw(self, n: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = torch.randn(n, self.g.style_dim, generator=self.rng)
        return z, self.g.make_noise(n, generator=self.rng)

    def batches(self, total: int, batch_size: int) -> Iterator[tuple[torch.Tensor,
                                                                    list[torch.Tensor]]]:
        """`total` draws in batches of at most `batch_size`."""
        done = 0
        while done < total:
            n = min(batch_size, total - done)
            yield self.draw(n)
            done += n

    def input_batches(self, total: int, batch_size: int) -> Iterator[LatentBatch]:
        """`batches` as `LatentBatch`es: the GAN family's fixed inputs for evaluation."""
        for z, noise in self.batches(total, batch_size):
            yield LatentBatch(z, noise)


def fixed_latent_batches(g: Generator, seed: int, total: int,
                         batch_size: int) -> Iterator[LatentBatch]:
    """The fixed inputs of generator `g` for `seed`, in batches (see `FixedLatents`)."""
    return FixedLatents(g, seed).input_batches(total, batch_size)
