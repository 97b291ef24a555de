"""DCL: dual contrastive learning (Zhao et al., "A Closer Look at Few-shot Image Generation").

No official training code exists. Confirmed by the paper's schematic [C]: the source generator
G_s is frozen while G_t and D_t train; the generator term's anchor is G_t^l(z_i), its positive
G_s^l(z_i) and its negatives G_s^l(z_j), j != i; the discriminator term uses D_t as the encoder
with anchor D_t^l(G_t(z_i)), positive D_t^l(G_s(z_i)) and negatives D_t^l(x_j) for real target
images; both are InfoNCE with cosine similarity and temperature tau, added to the adversarial
loss as lambda_g * L_G + lambda_d * L_D.
Not confirmed by the authors' code (settings below): tau, lambda_g, lambda_d and drawing one
layer per iteration [S, third-party reimplementation]; the contrastive batch size, which
networks minimise the discriminator term, and whether CDC's anchor/patch scheme is kept [U].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adaptscope.methods.base import Method, Step, check_setting, hp, paired_generation
from adaptscope.methods.losses import info_nce

D_TERM_SIDES = ("generator", "discriminator", "both")


class DCL(Method):
    name = "dcl"
    summary = "Generator and discriminator InfoNCE towards the source (Zhao et al., CVPR 2022)."

    @dataclass
    class Params:
        tau: float = hp(0.07, "[S] InfoNCE temperature.")
        lambda_g: float = hp(2.0, "[S] Weight of the generator contrastive term.")
        lambda_d: float = hp(0.5, "[S] Weight of the discriminator contrastive term.")
        contrastive_batch: int = hp(
            4, "[U] Latents per contrastive batch (CDC's feat_const_batch, whose code DCL reused).")
        d_term_minimized_by: str = hp(
            "both", "[U] Which side minimises the discriminator term: generator, discriminator "
            "or both.")

        def __post_init__(self) -> None:
            check_setting(self.d_term_minimized_by in D_TERM_SIDES, "dcl.d_term_minimized_by",
                          self.d_term_minimized_by, "one of " + ", ".join(D_TERM_SIDES))
            check_setting(self.tau > 0, "dcl.tau", self.tau, "more than 0")
            check_setting(self.contrastive_batch >= 2, "dcl.contrastive_batch",
                          self.contrastive_batch, "2 or more (negatives are other latents)")

    def _d_term(self, step: Step, img_s: torch.Tensor, img_t: torch.Tensor) -> torch.Tensor:
        d = self.ctx.d
        # One discriminator block per iteration ([S]); convs.0 is a 1x1 colour map, skip it.
        block = int(torch.randint(1, len(d.convs), ()).item())
        _, f_t = d(img_t, return_features=True)
        _, f_s = d(img_s, return_features=True)
        _, f_real = d(step.real, return_features=True)
        return info_nce(f_t[block], f_s[block], f_real[block], self.params.tau,
                        exclude_own_negative=False)

    def g_extra_losses(self, step: Step, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        g = self.ctx.g
        z = torch.randn(self.params.contrastive_batch, g.style_dim)
        img_s, feats_s, img_t, feats_t = paired_generation(self.ctx, z)
        layer = int(torch.randint(1, g.num_layers, ()).item())  # one layer per iteration [S]
        losses = {"dcl_g": self.params.lambda_g * info_nce(
            feats_t[layer], feats_s[layer], feats_s[layer], self.params.tau,
            exclude_own_negative=True)}
        if self.params.d_term_minimized_by in ("generator", "both"):
            losses["dcl_d"] = self.params.lambda_d * self._d_term(step, img_s, img_t)
        return losses

    def d_extra_losses(self, step: Step, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.params.d_term_minimized_by not in ("discriminator", "both"):
            return {}
        z = torch.randn(self.params.contrastive_batch, self.ctx.g.style_dim)
        with torch.no_grad():
            img_s, _, img_t, _ = paired_generation(self.ctx, z)
        return {"dcl_d": self.params.lambda_d * self._d_term(step, img_s, img_t)}
