"""BSA: batch statistics adaptation (Noguchi & Harada, ICCV 2019), in a StyleGAN2 form.

G's weights stay frozen; only per-channel scales and shifts of its hidden features and one latent
code per shot learn, by reconstructing the shots (no discriminator: `adversarial = False`).
Facts from the authors' code (nogu-atsu/small-dataset-image-generation; its SNGAN path is the
one with per-channel gamma / beta, the form followed here):
- gamma (init 1) and beta (init 0) per channel after every BatchNorm of the residual blocks and on
  the first linear's 4x4 output, none on the final layer (gen_models/sngan.py:47,75-83;
  gen_models/sngan_resblocks.py:55-63);
- codes start at zero and get N(0, 0.01^2) jitter at each use (gen_models/ada_generator.py:26-30,
  310-313; configs/default.yml:31);
- loss = mean |x - y| + perceptual + l_emd * EMD(codes, N(0, I) samples) + l_re * sum_l
  (mean (gamma_l - 1)^2 + mean beta_l^2) (ada_generator.py:62-102,144-156,339-347);
- one Adam lr for codes and statistics, 0.03 (ada_generator.py:331; default.yml:46), x0.2 every
  3000 iterations (updater.py:31-33); the first linear's own lr 1e-7 (default.yml:44,
  ada_generator.py:327-333) has no StyleGAN2 counterpart and is left out;
- random samples are z ~ N(0, tmp^2) (README "Inference"; ada_generator.py:37-47).
StyleGAN2 form [U]: the scale / shift acts on the constant input and on each StyledConv's
modulated-conv output (after demodulation, before noise, bias and activation: where a BatchNorm's
affine sits); ToRGB is untouched. A code is one W per shot in per-dimension standardised W
(w = w_mean + w_std * c, source mapping statistics), so c = 0 is the prior's centre as z = 0 is
in BSA, the jitter and EMD keep BSA's scales, and its tmp-scaled prior becomes the truncation
trick w = w_mean + tmp (mapping(z) - w_mean). Codes in z would lose the temperature to the
mapping's PixelNorm. The perceptual term is LPIPS with the protocol's own network.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adaptscope.errors import ConfigError
from adaptscope.methods.base import Method, Step, check_setting, hp
from adaptscope.metrics.lpips_embed import lpips_pair_distances
from adaptscope.models import Generator


def affine_targets(g: Generator) -> list[nn.Module]:
    """The modules whose outputs get a per-channel scale and shift: the constant input, then the
    modulated conv of every StyledConv."""
    return [g.input, g.conv1.conv, *[layer.conv for layer in g.convs]]


class BSAStats(nn.Module):
    """Per-channel scales (init 1) and shifts (init 0), one pair per affine target."""

    def __init__(self, widths: list[int]):
        super().__init__()
        self.scales = nn.ParameterList([nn.Parameter(torch.ones(c)) for c in widths])
        self.shifts = nn.ParameterList([nn.Parameter(torch.zeros(c)) for c in widths])


class BSACodes(nn.Module):
    """One code per shot in standardised W, and the source W statistics that define it."""

    def __init__(self, shots: int, dim: int):
        super().__init__()
        self.codes = nn.Parameter(torch.zeros(shots, dim))
        self.register_buffer("w_mean", torch.zeros(dim))
        self.register_buffer("w_std", torch.ones(dim))

    def to_w(self, c: torch.Tensor) -> torch.Tensor:
        return self.w_mean + self.w_std * c

    def standardise(self, w: torch.Tensor) -> torch.Tensor:
        return (w - self.w_mean) / self.w_std


def emd(codes: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """BSA's latent term: mean over samples of the squared distance to the nearest code, plus
    mean over codes of the squared distance to the nearest sample (ada_generator.py:144-156)."""
    dist = (codes.square().sum(1, keepdim=True) - 2 * codes @ samples.T
            + samples.square().sum(1)[None, :])
    return dist.min(0).values.mean() + dist.min(1).values.mean()


def stats_regulariser(stats: BSAStats) -> torch.Tensor:
    """sum_l mean (gamma_l - 1)^2 + mean beta_l^2 (ada_generator.py:339-347)."""
    return sum((s - 1).square().mean() + b.square().mean()
               for s, b in zip(stats.scales, stats.shifts, strict=True))


@contextmanager
def scaled_and_shifted(g: Generator, stats: BSAStats) -> Iterator[None]:
    """G with the scales and shifts applied, by forward hooks removed on exit."""

    def hook(scale: torch.Tensor, shift: torch.Tensor):
        return lambda module, inputs, out: out * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

    handles = [m.register_forward_hook(hook(s, b)) for m, s, b in
               zip(affine_targets(g), stats.scales, stats.shifts, strict=True)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class BSA(Method):
    name = "bsa"
    summary = "Learn only G's per-channel scales/shifts and per-shot codes by reconstruction."
    adversarial = False
    # [C] lr 0.03 (ada_generator.py:331; default.yml:46); no path length or R1 runs without D.
    loop_settings = {"lr": 0.03, "path_regularize": 0.0, "r1_gamma": 0.0}

    @dataclass
    class Params:
        pixel_weight: float = hp(
            1.0, "[C] Weight of mean |G(code) - shot| (ada_generator.py:68-72, "
                 "normalize_l1_loss false in default.yml:38).")
        perceptual_weight: float = hp(
            1.0, "[U] Weight of LPIPS(G(code), shot) with the protocol's LPIPS net; BSA uses "
                 "0.001 x L1 of raw VGG16 conv1_1..conv4_3 features (train.py:92-93; "
                 "default.yml:36-37), a scale that does not carry over.")
        emd_weight: float = hp(0.1, "[C] l_emd, weight of the EMD latent term (default.yml:32).")
        emd_samples: int = hp(
            10, "[C] Prior samples per code in the EMD term (ada_generator.py:153).")
        stats_weight: float = hp(
            0.02, "[C] l_re, weight of the scale/shift regulariser (default.yml:33).")
        code_jitter: float = hp(
            0.01, "[C] Std of the noise added to the codes at each use (ada_generator.py:26-30).")
        temperature: float = hp(
            0.5, "[C] tmp of BSA's random samples z ~ N(0, tmp^2) (README 'Inference', "
                 "ada_generator.py:43-44), here truncation psi in W [U]. Its evaluation "
                 "extension draws a normal truncated to [-0.3, 0.3] instead (default.yml:41).")
        lr_shift_every: int = hp(
            3000, "[C] exponential_shift_interval: the lr is multiplied by lr_shift_scale before "
                  "every update (i + 1) % 3000 == 0 (updater.py:31-33; default.yml:45); 0: never.")
        lr_shift_scale: float = hp(0.2, "[C] lr_scale (default.yml:47).")
        n_w_stats: int = hp(
            4096, "[U] Latents for the source W mean and std that standardise the codes "
                  "(rosinality's mean_latent count).")

        def __post_init__(self) -> None:
            for key in ("pixel_weight", "perceptual_weight", "emd_weight", "stats_weight",
                        "code_jitter", "temperature"):
                value = getattr(self, key)
                check_setting(value >= 0, f"bsa.{key}", value, "0 or more")
            check_setting(self.emd_samples >= 1, "bsa.emd_samples", self.emd_samples,
                          "1 or more")
            check_setting(self.lr_shift_every >= 0, "bsa.lr_shift_every", self.lr_shift_every,
                          "0 (no shift) or more")
            check_setting(0 < self.lr_shift_scale <= 1, "bsa.lr_shift_scale",
                          self.lr_shift_scale, "in (0, 1]")
            check_setting(self.n_w_stats >= 2, "bsa.n_w_stats", self.n_w_stats, "2 or more")

    def build(self) -> None:
        g = self.ctx.g
        widths = [g.input.input.shape[1], *[m.out_channels for m in affine_targets(g)[1:]]]
        self.stats = BSAStats(widths)
        self.codes = BSACodes(len(self.ctx.shots), g.style_dim)
        self._lpips: nn.Module | None = None

    def setup(self) -> None:
        """Source W statistics, from a private seeded generator (the run's RNG is untouched)."""
        g = self.ctx.g
        z = torch.randn(self.params.n_w_stats, g.style_dim,
                        generator=torch.Generator().manual_seed(0)).to(g.device)
        with torch.no_grad():
            w = g.style(z)
        self.codes.w_mean.copy_(w.mean(0))
        self.codes.w_std.copy_(w.std(0).clamp_min(1e-8))

    def lr_factor(self, iteration: int) -> float:
        every = self.params.lr_shift_every
        return self.params.lr_shift_scale ** ((iteration + 1) // every) if every else 1.0

    def extra_g_modules(self) -> list[nn.Module]:
        return [self.stats, self.codes]

    def trainable_g_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def generate(self, g: Generator, modules: list[nn.Module], styles: list[torch.Tensor],
                 **kwargs: Any) -> tuple[torch.Tensor, Any]:
        """z (evaluation's fixed N(0, I) latents) goes to BSA's tempered prior; W passes as is.

        BSA keeps no moving average: its code samples the frozen G with the trained statistics,
        so evaluation's g_ema (which the loop still moves towards G) and averaged modules are
        replaced by G and the live ones."""
        g, (stats, codes) = self.ctx.g, self.extra_g_modules()
        if not kwargs.get("input_is_latent", False):
            t = self.params.temperature
            styles = [codes.w_mean + t * (g.style(s) - codes.w_mean) for s in styles]
            kwargs = {**kwargs, "input_is_latent": True}
        with scaled_and_shifted(g, stats):
            return g(styles, **kwargs)

    def _perceptual_net(self) -> nn.Module:
        """The protocol's LPIPS net, copied to G's device if it lives elsewhere."""
        if self._lpips is None:
            net = self.ctx.perceptual
            if net is None:
                raise ConfigError("bsa needs the protocol's LPIPS network (MethodContext."
                                  "perceptual) for its perceptual loss, or "
                                  "bsa.perceptual_weight = 0")
            device = self.ctx.g.device
            if any(p.device != device for p in net.parameters()):
                net = copy.deepcopy(net).to(device).requires_grad_(False)
            self._lpips = net
        return self._lpips

    def g_extra_losses(self, step: Step, fake: torch.Tensor | None) -> dict[str, torch.Tensor]:
        g, shots, p = self.ctx.g, self.ctx.shots, self.params
        c = self.codes.codes
        jitter = p.code_jitter * torch.randn(c.shape).to(c.device)
        img, _ = self.generate(g, [self.stats, self.codes], [self.codes.to_w(c + jitter)],
                               input_is_latent=True, noise=g.make_noise(len(c)))
        losses = {"bsa_pixel": p.pixel_weight * (img - shots).abs().mean()}
        if p.perceptual_weight > 0:
            dist = lpips_pair_distances(self._perceptual_net(), img, shots)
            losses["bsa_perceptual"] = p.perceptual_weight * dist.mean()
        with torch.no_grad():  # the prior the codes are pulled to: standardised source W
            z = torch.randn(p.emd_samples * len(c), g.style_dim).to(g.device)
            prior = self.codes.standardise(g.style(z))
        losses["bsa_emd"] = p.emd_weight * emd(c, prior)
        losses["bsa_stats"] = p.stats_weight * stats_regulariser(self.stats)
        return losses
