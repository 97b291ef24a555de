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
mapping's PixelNorm.
The perceptual term (`perceptual`) is by default LPIPS with the protocol's own network, so the loss
optimises the network intra-LPIPS is measured with; "vgg_l1" is the code's form, from which the
published numbers came: 0.001 x the sum over conv1_1..conv4_3 of mean |VGG16(x) - VGG16(y)|
(train.py:8,87-93; ada_generator.py:74-89; default.yml:36-37,40), with torchvision's VGG-16, and
on the embedded world with the toy backbone's four conv stages in its place.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adaptscope.errors import ConfigError, WeightsError
from adaptscope.files import load_weights_only
from adaptscope.methods.base import Method, Step, check_setting, hp
from adaptscope.metrics.lpips_embed import PackageLPIPS, as_lpips_net, lpips_pair_distances
from adaptscope.metrics.weights import resolve_weights
from adaptscope.models import Generator

PERCEPTUAL_FORMS = ("lpips", "vgg_l1")
# torchvision VGG-16 `features` indices of the ReLUs after conv1_1 ... conv4_3: the layers BSA's
# loss reads (train.py:92-93) from chainer's VGG16Layers, whose conv outputs include the ReLU.
VGG_RELUS = (1, 3, 6, 8, 11, 13, 15, 18, 20, 22)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
Features = Callable[[torch.Tensor], list[torch.Tensor]]


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


class VGGFeatures(nn.Module):
    """torchvision VGG-16's activations after conv1_1 ... conv4_3 (ReLU included) of [-1, 1]
    images, normalised as its ImageNet weights expect. BSA's code feeds chainer's Caffe VGG-16
    0-255 images less the mean (ada_generator.py:76-80); these weights expect another scale."""

    def __init__(self, trunk: nn.Sequential):
        super().__init__()
        self.trunk = trunk
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = ((x + 1) / 2 - self.mean) / self.std, []
        for i, layer in enumerate(self.trunk):
            h = layer(h)
            if i in VGG_RELUS:
                out.append(h)
        return out


def vgg_trunk(perceptual: nn.Module | None,
              weights_dir: str | os.PathLike | None = None) -> nn.Sequential:
    """VGG-16 `features[:23]` (conv1_1 ... relu4_3): a copy of the protocol's LPIPS trunk when
    that is VGG (the same torchvision file), else loaded from `resolve_weights("vgg")` (methods
    do not see metrics.weights_dir: $ADAPTSCOPE_WEIGHTS_DIR and the caches are searched). Built
    without drawing random numbers, so a run's RNG stream does not depend on when it is built."""
    if perceptual is not None:
        net = as_lpips_net(perceptual)
        if isinstance(net, PackageLPIPS) and net.backbone_name == "vgg":
            layers = [m for k in range(1, 5) for m in getattr(net.model.net, f"slice{k}")]
            return copy.deepcopy(nn.Sequential(*layers))
    import torchvision

    path = resolve_weights("vgg", weights_dir)
    state = load_weights_only(path, what="torchvision VGG-16 state dict")
    with torch.device("meta"):
        trunk = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])[:23]
    try:
        trunk.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                               if k.startswith("features.")
                               and int(k.split(".")[1]) < len(trunk)}, assign=True)
    except RuntimeError as err:
        raise WeightsError(f"{path} is not a torchvision VGG-16 state dict: {err}") from err
    return trunk


def feature_l1(features: Features, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over layers of mean |f_l(x) - f_l(y)|, y's features without gradient, as BSA's
    per-layer mean_absolute_error (ada_generator.py:74-89)."""
    with torch.no_grad():
        target = features(y)
    return sum((a - b).abs().mean() for a, b in zip(features(x), target, strict=True))


class BSA(Method):
    name = "bsa"
    summary = "Learn only G's per-channel scales/shifts and per-shot codes by reconstruction."
    adversarial = False
    # [C] lr 0.03 (ada_generator.py:331; default.yml:46) in chainer's Adam with its default
    # betas (0.9, 0.999) (ada_generator.py:55-60); no path length or R1 runs without D.
    loop_settings = {"lr": 0.03, "betas": (0.9, 0.999), "path_regularize": 0.0, "r1_gamma": 0.0}

    @dataclass
    class Params:
        pixel_weight: float = hp(
            1.0, "[C] Weight of mean |G(code) - shot| (ada_generator.py:68-72, "
                 "normalize_l1_loss false in default.yml:38).")
        perceptual: str = hp(
            "lpips", "[U] The perceptual term: lpips (LPIPS with the protocol's own network, so "
                     "the loss optimises the network the diversity metric uses) or vgg_l1 (the "
                     "code's form, which gave the published numbers: vgg_l1_weight x the sum over "
                     "conv1_1..conv4_3 of mean |VGG16(x) - VGG16(y)|, train.py:87-93, "
                     "ada_generator.py:74-89; on the embedded world the toy backbone's four conv "
                     "stages stand in for VGG16).")
        perceptual_weight: float = hp(
            1.0, "[U] Weight of LPIPS(G(code), shot) with the protocol's LPIPS net (perceptual = "
                 "lpips); the code's own term is vgg_l1.")
        vgg_l1_weight: float = hp(
            0.001, "[C] l_per, weight of the vgg_l1 term (default.yml:36-37). Set for Caffe "
                   "VGG16 features of 0-255 images; torchvision's and the toy backbone's "
                   "features are on other scales, so its effect does not carry over exactly.")
        emd_weight: float = hp(0.1, "[C] l_emd, weight of the EMD latent term (default.yml:32).")
        emd_samples: int = hp(
            10, "[C] Prior samples per code in the EMD term (ada_generator.py:153).")
        stats_weight: float = hp(
            0.02, "[C] l_re, weight of the scale/shift regulariser (default.yml:33).")
        code_jitter: float = hp(
            0.01, "[C] Std of the noise added to the codes at each use (ada_generator.py:26-30).")
        temperature: float = hp(
            0.5, "[C] tmp of BSA's random samples z ~ N(0, tmp^2) (README 'Inference', "
                 "ada_generator.py:37-47), here truncation psi in W [U]: w = w_mean + psi "
                 "(mapping(z) - w_mean); 1 samples the generator's own W, 0 one image. It sets "
                 "diversity directly. Which value gave the published numbers the code does not "
                 "say: its evaluation extension draws a normal truncated to [-0.3, 0.3] "
                 "(default.yml:41, ada_generator.py:189-192).")
        lr_shift_every: int = hp(
            3000, "[C] exponential_shift_interval: the lr is multiplied by lr_shift_scale before "
                  "every update (i + 1) % 3000 == 0 (updater.py:31-33; default.yml:45); 0: never.")
        lr_shift_scale: float = hp(0.2, "[C] lr_scale (default.yml:47).")
        n_w_stats: int = hp(
            4096, "[U] Latents for the source W mean and std that standardise the codes "
                  "(rosinality's mean_latent count).")

        def __post_init__(self) -> None:
            check_setting(self.perceptual in PERCEPTUAL_FORMS, "bsa.perceptual",
                          self.perceptual, " or ".join(PERCEPTUAL_FORMS))
            for key in ("pixel_weight", "perceptual_weight", "vgg_l1_weight", "emd_weight",
                        "stats_weight", "code_jitter", "temperature"):
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
        self._features: Features | None = None

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
            self._lpips = self._on_g_device(net)
        return self._lpips

    def _on_g_device(self, net: nn.Module) -> nn.Module:
        """`net`, or a frozen copy on G's device if it lives elsewhere."""
        device = self.ctx.g.device
        if any(p.device != device for p in net.parameters()):
            net = copy.deepcopy(net).to(device).requires_grad_(False)
        return net

    def _feature_net(self) -> Features:
        """The vgg_l1 feature maps: the toy backbone's conv stages on the embedded world (its
        LPIPS network), torchvision VGG-16's conv1_1..conv4_3 elsewhere (`vgg_trunk`)."""
        if self._features is None:
            net = self.ctx.perceptual
            if getattr(net, "backbone_name", None) == "toy":
                self._features = self._on_g_device(net).lpips_features
            else:
                vgg = VGGFeatures(vgg_trunk(net)).eval().requires_grad_(False)
                self._features = vgg.to(self.ctx.g.device)
        return self._features

    def g_extra_losses(self, step: Step, fake: torch.Tensor | None) -> dict[str, torch.Tensor]:
        g, shots, p = self.ctx.g, self.ctx.shots, self.params
        c = self.codes.codes
        jitter = p.code_jitter * torch.randn(c.shape).to(c.device)
        img, _ = self.generate(g, [self.stats, self.codes], [self.codes.to_w(c + jitter)],
                               input_is_latent=True, noise=g.make_noise(len(c)))
        losses = {"bsa_pixel": p.pixel_weight * (img - shots).abs().mean()}
        if p.perceptual == "vgg_l1":
            if p.vgg_l1_weight > 0:
                losses["bsa_perceptual"] = p.vgg_l1_weight * feature_l1(
                    self._feature_net(), img, shots)
        elif p.perceptual_weight > 0:
            dist = lpips_pair_distances(self._perceptual_net(), img, shots)
            losses["bsa_perceptual"] = p.perceptual_weight * dist.mean()
        with torch.no_grad():  # the prior the codes are pulled to: standardised source W
            z = torch.randn(p.emd_samples * len(c), g.style_dim).to(g.device)
            prior = self.codes.standardise(g.style(z))
        losses["bsa_emd"] = p.emd_weight * emd(c, prior)
        losses["bsa_stats"] = p.stats_weight * stats_regulariser(self.stats)
        return losses
