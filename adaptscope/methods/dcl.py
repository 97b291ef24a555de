"""DCL: dual contrastive learning (Zhao et al., "A Closer Look at Few-shot Image Generation").

No official training code exists. Confirmed by the paper's schematic [C]: the source generator
G_s is frozen while G_t and D_t train; the generator term's anchor is G_t^l(z_i), its positive
G_s^l(z_i) and its negatives G_s^l(z_j), j != i; the discriminator term uses D_t as the encoder
with anchor D_t^l(G_t(z_i)), positive D_t^l(G_s(z_i)) and negatives D_t^l(x_j) for real target
images; both are InfoNCE with cosine similarity and temperature tau, added to the adversarial
loss as lambda_g * L_G + lambda_d * L_D.

Second-hand [S]: the DCL repository's `model.py` keeps CDC's patch discriminator and its extra
patch head and returns contrastive features from the residual branches (fromRGB output, then
each block's conv1 and conv2 outputs before the skip): so DCL is run on CDC's anchor / patch
adversarial scheme (`patch_scheme`, through the same `PatchScheme` CDC uses) and its D term
reads those branch features (`d_features = "branches"`). The only public implementation of the D
term adds it to the discriminator's loss alone (`d_term_minimized_by = "discriminator"`); "both"
would also push G_t's images away from the real shots, which can inflate diversity. tau,
lambda_g, lambda_d and one random layer per iteration are from a third-party reimplementation
[S]; the contrastive batch size [U]. `reports/dcl-sensitivity/` measures what the [U]/[S] choices
change on the embedded world.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adaptscope.methods.base import Method, Step, check_setting, hp, paired_generation
from adaptscope.methods.losses import info_nce
from adaptscope.methods.patch_scheme import PatchScheme, PatchSchemeParams
from adaptscope.models.stylegan2 import D_FEATURE_KINDS

D_TERM_SIDES = ("generator", "discriminator", "both")


class DCL(Method):
    name = "dcl"
    summary = ("Generator and discriminator InfoNCE towards the source, on CDC's anchor/patch "
               "scheme (Zhao et al., CVPR 2022).")

    @dataclass
    class Params(PatchSchemeParams):
        tau: float = hp(0.07, "[S] InfoNCE temperature.")
        lambda_g: float = hp(2.0, "[S] Weight of the generator contrastive term.")
        lambda_d: float = hp(0.5, "[S] Weight of the discriminator contrastive term.")
        contrastive_batch: int = hp(
            4, "[U] Latents per contrastive batch (CDC's feat_const_batch, whose code DCL reused).")
        d_term_minimized_by: str = hp(
            "discriminator",
            "[S] Which side minimises the discriminator term: discriminator (the only public "
            "implementation), generator or both.")
        patch_scheme: bool = hp(
            True,
            "[S] Adapt on CDC's anchor latents and patch-level D (the n_anchors, subspace_* and "
            "patch_resolution settings), as the DCL repository's model.py keeps CDC's patch "
            "discriminator and head; false: normal latents and the image-level D throughout.")
        d_features: str = hp(
            "branches",
            "[S] Which D maps the discriminator term reads: branches (fromRGB, then each "
            "block's conv1/conv2 outputs before the skip, as DCL's model.py returns) or blocks "
            "(each block's output).")
        shared_noise: bool = hp(
            False,
            "[U] Whether G_s and G_t share noise maps in the contrastive passes; false as in "
            "CDC's code, on which DCL was built.")

        def __post_init__(self) -> None:
            self.check_patch_scheme("dcl")
            check_setting(self.d_term_minimized_by in D_TERM_SIDES, "dcl.d_term_minimized_by",
                          self.d_term_minimized_by, "one of " + ", ".join(D_TERM_SIDES))
            check_setting(self.d_features in D_FEATURE_KINDS, "dcl.d_features",
                          self.d_features, "one of " + ", ".join(D_FEATURE_KINDS))
            check_setting(self.tau > 0, "dcl.tau", self.tau, "more than 0")
            check_setting(self.contrastive_batch >= 2, "dcl.contrastive_batch",
                          self.contrastive_batch, "2 or more (negatives are other latents)")

    def build(self) -> None:
        self.scheme = (PatchScheme(self.params, self.ctx.d, self.ctx.g.style_dim, "dcl")
                       if self.params.patch_scheme else None)
        self._batch: tuple[int, Any] | None = None  # (iteration, contrastive pass)

    def setup(self) -> None:
        if self.scheme is not None:
            self.scheme.draw_anchors()

    def extra_d_modules(self) -> list[nn.Module]:
        return [self.scheme.head] if self.scheme is not None else []

    def sample_latents(self, step: Step, batch: int) -> list[torch.Tensor]:
        if self.scheme is not None and self.scheme.anchor_iteration(step.iteration):
            return [self.scheme.anchor_latents(batch)]
        return super().sample_latents(step, batch)

    def d_logits(self, step: Step, images: torch.Tensor) -> torch.Tensor:
        if self.scheme is None or self.scheme.anchor_iteration(step.iteration):
            return self.ctx.d(images)
        return self.scheme.patch_logits(images)

    def _d_term(self, step: Step, img_s: torch.Tensor, img_t: torch.Tensor) -> torch.Tensor:
        d, kind = self.ctx.d, self.params.d_features
        # One D feature map per iteration ([S]); index 0, the 1x1 fromRGB map, is skipped.
        n_maps = len(d.convs) if kind == "blocks" else 2 * len(d.convs) - 1
        index = int(torch.randint(1, n_maps, ()).item())
        block = index if kind == "blocks" else (index + 1) // 2
        # One pass for the three sets, stopping at the block that makes the map.
        images = torch.cat([img_t, img_s, step.real.to(img_t.device)])
        maps = d.features(images, kind, blocks=block + 1)[index]
        f_t, f_s, f_real = maps.split([len(img_t), len(img_s), len(step.real)])
        return info_nce(f_t, f_s, f_real, self.params.tau, exclude_own_negative=False)

    def _contrastive_pass(self, step: Step):
        """This iteration's contrastive batch: G_s(z) and G_t(z), with G_t's graph kept.

        One batch serves both terms of an iteration ([U]: no reference code says otherwise):
        G does not change between the iteration's D step and its G step, so G_t(z) computed
        once, in the D step, is the G_t(z) of the G step too, and the G term backpropagates
        through the graph kept from then. That saves two generator passes per iteration.
        """
        if self._batch is None or self._batch[0] != step.iteration:
            g = self.ctx.g
            z = torch.randn(self.params.contrastive_batch, g.style_dim)
            frozen = [p for p in g.parameters() if not p.requires_grad]
            for p in frozen:  # the D step freezes G: record the graph for the G step anyway
                p.requires_grad_(True)
            try:
                with torch.enable_grad():
                    batch = paired_generation(self.ctx, z, self.params.shared_noise)
            finally:
                for p in frozen:
                    p.requires_grad_(False)
            self._batch = (step.iteration, batch)
        return self._batch[1]

    def g_extra_losses(self, step: Step, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        g = self.ctx.g
        img_s, feats_s, img_t, feats_t = self._contrastive_pass(step)
        self._batch = None  # the G step is the iteration's last use
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
        img_s, _, img_t, _ = self._contrastive_pass(step)
        return {"dcl_d": self.params.lambda_d * self._d_term(step, img_s, img_t.detach())}

    def state_dict(self) -> dict[str, Any]:
        return self.scheme.state_dict() if self.scheme is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scheme is not None:
            self.scheme.load_state_dict(state)
