"""CDC's anchor / patch adversarial scheme, shared by every method that adapts with it.

Ojha et al. (2021) split the latent space: on every `subspace_freq`-th iteration the latents are
drawn near a few fixed anchors and D judges whole images; on the others the latents are normal
and D judges patches, through an extra head on an intermediate feature map. What the authors'
code does (CDC `train.py`, `model.py`):

- anchors: `n_train` (10) latents drawn once (train.py:155); near an anchor: anchor plus
  N(0, subspace_std^2) per coordinate (train.py:132-140); `which = i % subspace_freq`, and
  `which == 0` is the anchor / image-level iteration (train.py:196, 209-214).
- the patch head reads the fourth D block's residual branch, `convs[3].conv2`'s output before
  the skip is added (model.py:754-766 with `highp = 1`, so `p_ind = 0`), a 32x32 map on the 256 px
  D, and is a `ConvLayer(512, 1, 3)`: an EqualConv2d followed by FusedLeakyReLU (bias, slope 0.2,
  times sqrt 2) (model.py:787-798, 600-604).
- R1 is taken on the same path as the adversarial logits of that iteration, the patch logits
  averaged per image (train.py:262-274); the shared step does this through `d_logits`.

A method composes a `PatchScheme` and forwards `sample_latents` and `d_logits` to it; its
`Params` inherit `PatchSchemeParams`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from adaptscope.errors import ConfigError
from adaptscope.methods.base import hp
from adaptscope.models.layers import ConvLayer
from adaptscope.models.stylegan2 import Discriminator


@dataclass
class PatchSchemeParams:
    """The scheme's settings ([C]: CDC train.py defaults)."""

    n_anchors: int = hp(10, "[C] Fixed anchor latents of the anchor region (--n_train).")
    subspace_freq: int = hp(
        4, "[C] Every this many iterations: anchor latents and the image-level D (train.py "
        "default; its run.sh uses 2).")
    subspace_std: float = hp(0.1, "[C] Std of the Gaussian around an anchor latent.")
    patch_resolution: int = hp(
        0,
        "[C] Resolution of the residual-branch map the patch head reads: 32 on the 256 px D "
        "(convs[3].conv2), and 0 means size // 8 (at least 4), the same block at any size.")

    def check_patch_scheme(self, prefix: str) -> None:
        """Raise ConfigError naming `prefix.key` for a value out of range."""
        for key, value, low in (("n_anchors", self.n_anchors, 1),
                                ("subspace_freq", self.subspace_freq, 1),
                                ("subspace_std", self.subspace_std, 0),
                                ("patch_resolution", self.patch_resolution, 0)):
            if value < low:
                raise ConfigError(f"{prefix}.{key} = {value!r} is not allowed: {low} or more")


class PatchScheme:
    """The anchors, the patch head and the choice between them at each iteration."""

    def __init__(self, params: PatchSchemeParams, d: Discriminator, style_dim: int,
                 prefix: str):
        """Build the patch head (structure, not state: a resumed run builds it, then loads it).

        Its random initial weights are drawn here on every run; a resumed run then overwrites
        them with the checkpointed ones.
        """
        self.params, self.d, self.style_dim = params, d, style_dim
        res = params.patch_resolution or max(d.size // 8, 4)
        resolutions = d.block_resolutions()
        if res not in resolutions:
            raise ConfigError(
                f"{prefix}.patch_resolution = {params.patch_resolution} is not allowed: {res} "
                f"is not one of D's feature resolutions; use 0 (size // 8) or one of "
                f"{resolutions}")
        self.block = resolutions.index(res)
        self.head = ConvLayer(d.channels[res], 1, 3)  # conv + FusedLeakyReLU, as CDC's Extra
        self.anchors: torch.Tensor | None = None

    def draw_anchors(self) -> None:
        """The fixed anchor latents: checkpointed state, drawn on fresh runs only."""
        self.anchors = torch.randn(self.params.n_anchors, self.style_dim)

    def anchor_iteration(self, iteration: int) -> bool:
        return iteration % self.params.subspace_freq == 0

    def anchor_latents(self, batch: int) -> torch.Tensor:
        idx = torch.randint(0, self.anchors.shape[0], (batch,))
        return self.anchors[idx] + self.params.subspace_std * torch.randn(batch, self.style_dim)

    def patch_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(N, P) patch logits: the head on `convs[block].conv2`'s output, D stops there."""
        branches = self.d.features(images, "branches", blocks=self.block + 1)
        return self.head(branches[2 * self.block]).flatten(1)

    def state_dict(self) -> dict[str, Any]:
        return {"head": self.head.state_dict(), "anchors": self.anchors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.anchors = state["anchors"]
