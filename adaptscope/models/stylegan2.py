"""StyleGAN2 generator and discriminator with the reference (rosinality) checkpoint layout.

`channels=None` gives exactly the reference widths (512 up to 32 px, then 256, 128, 64, 32, 16
times the channel multiplier), so every public FFHQ / CDC / DCL checkpoint loads strictly.
A `channels` mapping (resolution -> width) shrinks the model for CPU work.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from adaptscope.models.layers import (
    BLUR_TAPS,
    ConstantInput,
    ConvLayer,
    EqualLinear,
    PixelNorm,
    ResBlock,
    StyledConv,
    ToRGB,
)
from adaptscope.models.sampling import LatentBatch, fixed_latent_batches


def reference_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """Widths per resolution of the reference implementation."""
    cm = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm,
            512: 32 * cm, 1024: 16 * cm}


def _resolve_channels(
    size: int, channel_multiplier: int, channels: Mapping[int, int] | None
) -> dict[int, int]:
    if size < 8 or size & (size - 1):
        raise ValueError(f"size must be a power of two >= 8, got {size}")
    if channels is None:
        return reference_channels(channel_multiplier)
    widths = {int(k): int(v) for k, v in channels.items()}
    missing = [2**i for i in range(2, int(math.log2(size)) + 1) if 2**i not in widths]
    if missing:
        raise ValueError(f"channels must give a width for every resolution; missing {missing}")
    return widths


class Generator(nn.Module):
    """Mapping network + synthesis network, called as `g([z]) -> (image, latent or None)`."""

    family = "gan"

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        lr_mlp: float = 0.01,
        channels: Mapping[int, int] | None = None,
        blur_taps: Sequence[float] = BLUR_TAPS,
    ):
        super().__init__()
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channel_multiplier = channel_multiplier
        self.lr_mlp = lr_mlp
        self.channels = _resolve_channels(size, channel_multiplier, channels)
        self.custom_channels = channels is not None

        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True)
              for _ in range(n_mlp)],
        )
        self.input = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(self.channels[4], self.channels[4], 3, style_dim,
                                blur_taps=blur_taps)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False)

        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer in range(self.num_layers):
            res = 2 ** ((layer + 5) // 2)
            self.noises.register_buffer(f"noise_{layer}", torch.randn(1, 1, res, res))
        in_ch = self.channels[4]
        for i in range(3, self.log_size + 1):
            out_ch = self.channels[2**i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True,
                                         blur_taps=blur_taps))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_taps=blur_taps))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, blur_taps=blur_taps))
            in_ch = out_ch

    @property
    def config(self) -> dict:
        """Constructor arguments, enough to rebuild this architecture."""
        return {
            "size": self.size,
            "style_dim": self.style_dim,
            "n_mlp": self.n_mlp,
            "channel_multiplier": self.channel_multiplier,
            "lr_mlp": self.lr_mlp,
            "channels": dict(self.channels) if self.custom_channels else None,
        }

    def extra_repr(self) -> str:
        return (f"size={self.size}, style_dim={self.style_dim}, n_mlp={self.n_mlp}, "
                f"channels={dict(self.channels)}")

    @property
    def device(self) -> torch.device:
        """The device the generator's weights are on."""
        return self.input.input.device

    def fixed_batches(self, seed: int, total: int, batch_size: int) -> Iterator[LatentBatch]:
        """The GAN family's fixed inputs for `seed` (z and noise maps), in batches: what the
        evaluator samples, the same for every method and iteration."""
        return fixed_latent_batches(self, seed, total, batch_size)

    def generate(self, inputs: LatentBatch) -> torch.Tensor:
        """Images of one batch of fixed inputs."""
        return self([inputs.z.to(self.device)], noise=inputs.noise)[0]

    def make_noise(self, batch: int = 1, generator: torch.Generator | None = None
                   ) -> list[torch.Tensor]:
        """Fresh noise maps, one per synthesis layer, of shape (batch, 1, res, res).

        Drawn on the CPU (from `generator` when given) and moved to the model's device, so the
        same generator gives the same maps on every device.
        """
        device = self.device
        return [torch.randn(batch, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2),
                            generator=generator).to(device) for i in range(self.num_layers)]

    @torch.no_grad()
    def mean_latent(self, n_latent: int) -> torch.Tensor:
        """Average W of `n_latent` random z: the centre used for truncation."""
        z = torch.randn(n_latent, self.style_dim, device=self.device)
        return self.style(z).mean(0, keepdim=True)

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.style(z)

    def forward(
        self,
        styles: Sequence[torch.Tensor],
        return_latents: bool = False,
        inject_index: int | None = None,
        truncation: float = 1,
        truncation_latent: torch.Tensor | None = None,
        input_is_latent: bool = False,
        noise: Sequence[torch.Tensor | None] | None = None,
        randomize_noise: bool = True,
        return_features: bool = False,
    ):
        """Synthesise images from one style (or two, for style mixing at `inject_index`).

        Returns `(image, latent or None)` like the reference; with `return_features=True` a third
        item lists the per-layer features that CDC and DCL compare: the output of `conv1` and of
        every styled conv, before ToRGB (2 * log2(size) - 3 maps; 13 at 256 px).
        """
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if noise is None:
            if randomize_noise:
                noise = [None] * self.num_layers
            else:
                noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        if truncation < 1:
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]

        if len(styles) < 2:
            latent = styles[0] if styles[0].ndim == 3 else styles[0].unsqueeze(1).repeat(
                1, self.n_latent, 1)
        else:
            if inject_index is None:
                inject_index = random.randint(1, self.n_latent - 1)
            latent = torch.cat([
                styles[0].unsqueeze(1).repeat(1, inject_index, 1),
                styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1),
            ], 1)

        out = self.input(latent.shape[0])
        out = self.conv1(out, latent[:, 0], noise=noise[0])
        features = [out]
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv_up, conv, noise1, noise2, to_rgb in zip(
            self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2], self.to_rgbs,
            strict=True,
        ):
            out = conv_up(out, latent[:, i], noise=noise1)
            features.append(out)
            out = conv(out, latent[:, i + 1], noise=noise2)
            features.append(out)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2

        result = (skip, latent if return_latents else None)
        return (*result, features) if return_features else result


D_FEATURE_KINDS = ("blocks", "branches")  # see Discriminator.features


class Discriminator(nn.Module):
    """Residual discriminator with minibatch standard deviation, returning one logit per image."""

    def __init__(
        self,
        size: int,
        channel_multiplier: int = 2,
        channels: Mapping[int, int] | None = None,
        blur_taps: Sequence[float] = BLUR_TAPS,
    ):
        super().__init__()
        self.size = size
        self.channel_multiplier = channel_multiplier
        self.channels = _resolve_channels(size, channel_multiplier, channels)
        self.custom_channels = channels is not None
        widths = self.channels
        log_size = int(math.log2(size))
        blocks: list[nn.Module] = [ConvLayer(3, widths[size], 1)]
        in_ch = widths[size]
        for i in range(log_size, 2, -1):
            out_ch = widths[2 ** (i - 1)]
            blocks.append(ResBlock(in_ch, out_ch, blur_taps))
            in_ch = out_ch
        self.convs = nn.Sequential(*blocks)
        self.stddev_group = 4
        self.stddev_feat = 1
        self.final_conv = ConvLayer(in_ch + 1, widths[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(widths[4] * 4 * 4, widths[4], activation=True),
            EqualLinear(widths[4], 1),
        )

    def extra_repr(self) -> str:
        return f"size={self.size}, channels={dict(self.channels)}"

    @property
    def config(self) -> dict:
        return {
            "size": self.size,
            "channel_multiplier": self.channel_multiplier,
            "channels": dict(self.channels) if self.custom_channels else None,
        }

    def block_resolutions(self) -> list[int]:
        """Output resolution of each entry of `convs` (the per-block feature maps)."""
        return [self.size] + [self.size // 2**i for i in range(1, len(self.convs))]

    def _minibatch_stddev(self, out: torch.Tensor) -> torch.Tensor:
        batch, channel, height, width = out.shape
        # The reference requires the batch to be divisible by the group; use the largest
        # group size <= 4 that divides it, which is the reference's choice whenever it works.
        group = max(g for g in range(1, min(batch, self.stddev_group) + 1) if batch % g == 0)
        y = out.view(group, -1, self.stddev_feat, channel // self.stddev_feat, height, width)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)
        y = y.mean([2, 3, 4], keepdim=True).squeeze(2)
        y = y.repeat(group, 1, height, width)
        return torch.cat([out, y], 1)

    def features(self, x: torch.Tensor, kind: str = "blocks",
                 blocks: int | None = None) -> list[torch.Tensor]:
        """Feature maps of the first `blocks` entries of `convs` (all by default), nothing after.

        kind "blocks": each entry's output. kind "branches": the fromRGB output, then each
        ResBlock's conv1 and conv2 outputs before the skip is added, the maps the DCL
        repository's D returns for contrastive learning and the one CDC's patch head reads
        (CDC model.py:754-766). The conv blocks act on each image alone (the minibatch-stddev
        layer comes later), so several image sets may share one batched call.
        """
        if kind not in D_FEATURE_KINDS:
            raise ValueError(f"kind must be one of {D_FEATURE_KINDS}, got {kind!r}")
        out = self.convs[0](x)
        feats = [out]
        for block in list(self.convs)[1:blocks]:
            if kind == "blocks":
                out = block(out)
                feats.append(out)
            else:
                h1 = block.conv1(out)
                h2 = block.conv2(h1)
                feats += [h1, h2]
                out = (h2 + block.skip(out)) / math.sqrt(2)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1)."""
        out = x
        for block in self.convs:
            out = block(out)
        out = self.final_conv(self._minibatch_stddev(out))
        return self.final_linear(out.view(out.shape[0], -1))
