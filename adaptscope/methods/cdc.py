"""CDC: cross-domain correspondence (Ojha et al., 2021).

Distance consistency between the frozen source generator and the adapting one, plus the
anchor / patch adversarial scheme: on every `subspace_freq`-th iteration latents are drawn near
fixed anchors and the image-level discriminator is used; on the others, normal latents and a
patch-level discriminator head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adaptscope.errors import ConfigError
from adaptscope.methods.base import Method, Step, check_setting, hp, paired_generation
from adaptscope.methods.losses import distance_consistency_loss
from adaptscope.models.layers import ConvLayer


class CDC(Method):
    name = "cdc"
    summary = "Cross-domain distance consistency + anchor/patch adversarial loss (Ojha 2021)."

    @dataclass
    class Params:
        kl_weight: float = hp(1000.0, "[C] Weight of the distance-consistency KL term.")
        feat_const_batch: int = hp(4, "[C] Latents per distance-consistency batch.")
        n_anchors: int = hp(10, "[C] Fixed anchor latents of the anchor region.")
        subspace_freq: int = hp(
            4, "[C] Every this many iterations: anchor latents and the image-level D.")
        subspace_std: float = hp(0.1, "[C] Std of the Gaussian around an anchor latent.")
        patch_resolution: int = hp(
            0,
            "Resolution of the D feature map the patch head reads. [C] 32 on the 256 px "
            "model (its 512-channel 32x32 map); 0 means size // 8 (at least 4), the same "
            "relative scale.",
        )

        def __post_init__(self) -> None:
            check_setting(self.feat_const_batch >= 2, "cdc.feat_const_batch",
                          self.feat_const_batch, "2 or more (distances need another latent)")
            check_setting(self.n_anchors >= 1, "cdc.n_anchors", self.n_anchors, "1 or more")
            check_setting(self.subspace_freq >= 1, "cdc.subspace_freq", self.subspace_freq,
                          "1 or more")
            check_setting(self.subspace_std >= 0, "cdc.subspace_std", self.subspace_std,
                          "0 or more")
            check_setting(self.patch_resolution >= 0, "cdc.patch_resolution",
                          self.patch_resolution, "0 (size // 8) or one of D's resolutions")

    def build(self) -> None:
        """The patch head: structure, not state, so a resumed run builds it too.

        Its random initial weights are drawn here on every run; a resumed run then overwrites
        them with the checkpointed ones in `load_state_dict`.
        """
        d = self.ctx.d
        res = self.params.patch_resolution or max(d.size // 8, 4)
        resolutions = d.block_resolutions()
        if res not in resolutions:
            raise ConfigError(
                f"cdc.patch_resolution = {self.params.patch_resolution} is not allowed: "
                f"{res} is not one of D's feature resolutions; use 0 (size // 8) or one of "
                f"{resolutions}")
        self.patch_block = resolutions.index(res)
        self.patch_head = ConvLayer(d.channels[res], 1, 3, activate=False)

    def setup(self) -> None:
        """The fixed anchor latents: checkpointed state, so fresh runs only."""
        self.anchors = torch.randn(self.params.n_anchors, self.ctx.g.style_dim)

    def extra_d_modules(self) -> list[nn.Module]:
        return [self.patch_head]

    def _anchor_iteration(self, step: Step) -> bool:
        return step.iteration % self.params.subspace_freq == 0

    def sample_latents(self, step: Step, batch: int) -> list[torch.Tensor]:
        if self._anchor_iteration(step):
            idx = torch.randint(0, self.anchors.shape[0], (batch,))
            return [self.anchors[idx] + self.params.subspace_std * torch.randn(
                batch, self.anchors.shape[1])]
        return super().sample_latents(step, batch)

    def d_logits(self, step: Step, images: torch.Tensor) -> torch.Tensor:
        if self._anchor_iteration(step):
            return self.ctx.d(images)
        _, feats = self.ctx.d(images, return_features=True)
        return self.patch_head(feats[self.patch_block]).flatten(1)

    def g_extra_losses(self, step: Step, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        g = self.ctx.g
        z = torch.randn(self.params.feat_const_batch, g.style_dim)
        # One random layer per anchor among the styled convs after the first ([C]: 1..12).
        layers = torch.randint(1, g.num_layers, (self.params.feat_const_batch,)).tolist()
        _, feats_s, _, feats_t = paired_generation(self.ctx, z)
        loss = distance_consistency_loss(feats_s, feats_t, layers)
        return {"cdc_dist": self.params.kl_weight * loss}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "anchors": self.anchors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.anchors = state["anchors"]
