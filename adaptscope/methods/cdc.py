"""CDC: cross-domain correspondence (Ojha et al., 2021).

Distance consistency between the frozen source generator and the adapting one, plus the
anchor / patch adversarial scheme (`adaptscope.methods.patch_scheme`). The distance term as
CDC's train.py:297-342 computes it: `feat_const_batch` fresh latents, one random generator layer
per anchor latent (`randint(1, n_latent - 1)`, train.py:300), cosine similarities to the other
latents, softmax, KLDivLoss(log p_target, p_source) with the mean reduction, times `kl_wt`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adaptscope.methods.base import Method, Step, check_setting, hp, paired_generation
from adaptscope.methods.losses import distance_consistency_loss
from adaptscope.methods.patch_scheme import PatchScheme, PatchSchemeParams


class CDC(Method):
    name = "cdc"
    summary = "Cross-domain distance consistency + anchor/patch adversarial loss (Ojha 2021)."

    @dataclass
    class Params(PatchSchemeParams):
        kl_weight: float = hp(1000.0, "[C] Weight of the distance-consistency KL term.")
        feat_const_batch: int = hp(4, "[C] Latents per distance-consistency batch.")
        shared_noise: bool = hp(
            False,
            "[C] Whether G_s and G_t share noise maps in the distance pass: false, as CDC "
            "calls both generators with fresh random noise (train.py:303, 323).")

        def __post_init__(self) -> None:
            self.check_patch_scheme("cdc")
            check_setting(self.feat_const_batch >= 2, "cdc.feat_const_batch",
                          self.feat_const_batch, "2 or more (distances need another latent)")

    def build(self) -> None:
        self.scheme = PatchScheme(self.params, self.ctx.d, self.ctx.g.style_dim, "cdc")

    def setup(self) -> None:
        self.scheme.draw_anchors()

    def extra_d_modules(self) -> list[nn.Module]:
        return [self.scheme.head]

    def sample_latents(self, step: Step, batch: int) -> list[torch.Tensor]:
        if self.scheme.anchor_iteration(step.iteration):
            return [self.scheme.anchor_latents(batch)]
        return super().sample_latents(step, batch)

    def d_logits(self, step: Step, images: torch.Tensor) -> torch.Tensor:
        if self.scheme.anchor_iteration(step.iteration):
            return self.ctx.d(images)
        return self.scheme.patch_logits(images)

    def g_extra_losses(self, step: Step, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        g = self.ctx.g
        z = torch.randn(self.params.feat_const_batch, g.style_dim)
        # One random layer per anchor among the styled convs after the first ([C]: 1..12).
        layers = torch.randint(1, g.num_layers, (self.params.feat_const_batch,)).tolist()
        _, feats_s, _, feats_t = paired_generation(self.ctx, z, self.params.shared_noise)
        loss = distance_consistency_loss(feats_s, feats_t, layers)
        return {"cdc_dist": self.params.kl_weight * loss}

    def state_dict(self) -> dict[str, Any]:
        return self.scheme.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheme.load_state_dict(state)
