"""guided-diffusion's UNet ("ADM", Dhariwal & Nichol 2021) in plain PyTorch, for unconditional
RGB models, with guided-diffusion's parameter names so its checkpoints load with `strict=True`.

Why a port: the FFHQ-256 ADM checkpoint that CRDI and Uni-DAD adapt (yandex-research/
ddpm-segmentation's `ffhq.pt`) and the LSUN models are plain state dicts of guided-diffusion's
`UNetModel`; diffusers has no converter for them, and the package cannot depend on an
unpackaged research repository. Checked against guided-diffusion's own forward on seeded random
weights (tests/test_adm.py, tests/fixtures/make_adm_reference.py).

Reference: openai/guided-diffusion at commit 22e0df8183507e13a7813f8d38d51b072ca1e67c,
`guided_diffusion/unet.py` and `nn.py` (file:line citations below are at that commit). Left out,
because no unconditional fp32 image model needs them: class conditioning, fp16, gradient
checkpointing (it changes memory, not values), 1-D / 3-D signals, the super-resolution and
encoder (classifier) models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adaptscope.errors import ConfigError

# guided-diffusion's channel_mult when the flag is empty (script_util.py:148-158).
DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}
GROUPS = 32  # every normalisation is GroupNorm(32, channels) (nn.py:93-100)


@dataclass(frozen=True)
class ADMConfig:
    """The model flags of guided-diffusion's scripts for an unconditional RGB model.

    Names, meanings and defaults are those of `model_and_diffusion_defaults`
    (script_util.py:43-65) as `create_model` (script_util.py:130-184) turns them into a
    `UNetModel`: `attention_resolutions` are in pixels, as on the command line;
    `channel_mult=None` takes guided-diffusion's default for `image_size`; `learn_sigma` doubles
    the output channels (the variance half, which `DiffusionModel` drops).
    """

    image_size: int = 64
    num_channels: int = 128
    num_res_blocks: int = 2
    channel_mult: tuple[float, ...] | None = None
    attention_resolutions: tuple[int, ...] = (16, 8)
    num_heads: int = 4
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    learn_sigma: bool = False
    dropout: float = 0.0
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    use_new_attention_order: bool = False

    def __post_init__(self) -> None:
        if self.channel_mult is None:
            if self.image_size not in DEFAULT_CHANNEL_MULT:
                raise ConfigError(
                    f"ADM image_size {self.image_size} has no default channel_mult (guided-"
                    f"diffusion has them for {sorted(DEFAULT_CHANNEL_MULT)}); give channel_mult")
            object.__setattr__(self, "channel_mult", DEFAULT_CHANNEL_MULT[self.image_size])
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        # A set in meaning (only membership counts, unet.py:501): kept sorted, largest first.
        object.__setattr__(self, "attention_resolutions",
                           tuple(sorted({int(r) for r in self.attention_resolutions},
                                        reverse=True)))
        for name in ("image_size", "num_channels", "num_res_blocks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ADM {name} = {getattr(self, name)}: must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ADM dropout = {self.dropout}: must be in [0, 1)")
        for mult in self.channel_mult:
            width = int(mult * self.num_channels)
            if width < GROUPS or width % GROUPS:
                raise ConfigError(
                    f"ADM width {width} (num_channels {self.num_channels} x channel_mult {mult}) "
                    f"is not a multiple of {GROUPS}, which its GroupNorm(32) needs")
        # Heads must split the channels evenly (unet.py:280-283, 345).
        if self.num_head_channels != -1:
            splits = [self.num_head_channels]
        else:
            splits = [self.num_heads] + [n for n in (self.num_heads_upsample,) if n != -1]
        for width in self.attention_widths():
            if any(n < 1 or width % n for n in splits):
                raise ConfigError(
                    f"ADM attention over {width} channels cannot be split into heads with "
                    f"num_heads {self.num_heads} / num_head_channels {self.num_head_channels}")

    @property
    def out_channels(self) -> int:
        return 6 if self.learn_sigma else 3

    @property
    def sample_size(self) -> int:
        """The image size, under diffusers' name, so either UNet answers the same question."""
        return self.image_size

    @property
    def attention_ds(self) -> frozenset[int]:
        """Downsampling rates with attention, as `create_model` computes them
        (script_util.py:162-164)."""
        return frozenset(self.image_size // int(res) for res in self.attention_resolutions)

    def attention_widths(self) -> list[int]:
        """Channel counts of every attention block, the middle block's included."""
        widths = [int(m * self.num_channels) for level, m in enumerate(self.channel_mult)
                  if 2**level in self.attention_ds]
        return widths + [int(self.channel_mult[-1] * self.num_channels)]

    def heads(self, channels: int, upsample: bool = False) -> int:
        """Attention heads over `channels`: a fixed head width wins over a head count
        (unet.py:277-283); the decoder may use its own count (unet.py:451-452, 587)."""
        if self.num_head_channels != -1:
            return channels // self.num_head_channels
        if upsample and self.num_heads_upsample != -1:
            return self.num_heads_upsample
        return self.num_heads


# The FFHQ-256 model of yandex-research/ddpm-segmentation (`ffhq.pt`, the source model of CRDI
# and Uni-DAD): MODEL_FLAGS in that repository's scripts/ddpm/train_interpreter.sh:3 (commit
# 9a13776bb78d4753df6a561749f3274cd158297a), the same flags as guided-diffusion's LSUN models
# (README.md:104 of guided-diffusion). use_fp16 True there only sets the compute dtype: the
# trainer saves its fp32 master weights (train_util.py:232-242, fp16_util.py:95-113), which run
# in fp32 here. diffusion_steps 1000 and noise_schedule linear
# are the schedule's, not the network's (see adaptscope.models.diffusion_checkpoint).
FFHQ256 = ADMConfig(image_size=256, num_channels=256, num_res_blocks=2,
                    attention_resolutions=(32, 16, 8), num_head_channels=64, learn_sigma=True,
                    dropout=0.1, use_scale_shift_norm=True, resblock_updown=True)
ADM_PRESETS: dict[str, ADMConfig] = {"ffhq256": FFHQ256}


def adm_preset(name: str) -> ADMConfig:
    """A named ADM configuration (see `ADM_PRESETS`)."""
    try:
        return ADM_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown ADM preset {name!r}: use one of "
                          f"{', '.join(sorted(ADM_PRESETS))}") from None


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0
                       ) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, cosines first
    (nn.py:103-121)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _zero(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters, as guided-diffusion initialises each block's last layer, so a
    fresh network starts as the identity on its residual paths (nn.py:68-74)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _norm(channels: int) -> nn.GroupNorm:
    # guided-diffusion's GroupNorm32 only adds an fp32 upcast, a no-op in fp32 (nn.py:17-19).
    return nn.GroupNorm(GROUPS, channels)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling, then a 3x3 convolution when `use_conv`
    (unet.py:81-110)."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """2x downsampling: a strided 3x3 convolution when `use_conv`, else 2x2 average pooling
    (unet.py:113-140)."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = (nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv
                   else nn.AvgPool2d(2, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """A residual block conditioned on the timestep embedding, optionally resampling
    (unet.py:143-256).

    With `use_scale_shift_norm` the embedding gives a scale and shift applied after the output
    GroupNorm (FiLM); otherwise it is added before it. Resampling happens between the input
    block's activation and its convolution, and on the skip path.
    """

    def __init__(self, channels: int, emb_channels: int, dropout: float,
                 out_channels: int | None = None, use_scale_shift_norm: bool = False,
                 up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.updown = up or down
        self.in_layers = nn.Sequential(_norm(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(_norm(out_channels), nn.SiLU(), nn.Dropout(p=dropout),
                                        _zero(nn.Conv2d(out_channels, out_channels, 3,
                                                        padding=1)))
        # guided-diffusion never asks for the 3x3 skip convolution in UNetModel (use_conv False).
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over all spatial positions, added back to its input (unet.py:259-305).

    The qkv projection's output channels are grouped by head then q/k/v in guided-diffusion's
    legacy order (QKVAttentionLegacy, unet.py:328-354: the checkpoints' order), or q/k/v then head
    with `new_order` (QKVAttention, unet.py:361-389). The product is computed with
    `scaled_dot_product_attention`, the same softmax(q.k / sqrt(ch)) v without the
    (H*W)^2 attention matrix in memory where a fused kernel exists.
    """

    def __init__(self, channels: int, heads: int, new_order: bool = False):
        super().__init__()
        self.heads = heads
        self.new_order = new_order
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        length, ch = qkv.shape[-1], c // self.heads
        if self.new_order:
            q, k, v = (z.reshape(b * self.heads, ch, length) for z in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(b * self.heads, 3 * ch, length).split(ch, dim=1)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2))
        h = self.proj_out(a.transpose(1, 2).reshape(b, c, length))
        return (x + h).reshape(b, c, *spatial)


class TimestepSequential(nn.Sequential):
    """A block of layers; the residual blocks among them also receive the timestep embedding
    (unet.py:66-78)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class ADMUNet(nn.Module):
    """guided-diffusion's `UNetModel` (unet.py:396-663) for an unconditional RGB model.

    `forward(x, timesteps)` maps noisy images and their (unscaled, 0..T-1) timesteps to the
    predicted noise, followed by the variance channels when `config.learn_sigma`. Parameter
    names follow guided-diffusion's, module by module, so its state dicts load strictly.
    """

    def __init__(self, config: ADMConfig):
        super().__init__()
        self.config = cfg = config
        mc = cfg.num_channels
        emb_dim = 4 * mc
        ds_attn = cfg.attention_ds

        def res(ch: int, out: int | None = None, **resample: bool) -> ResBlock:
            return ResBlock(ch, emb_dim, cfg.dropout, out, cfg.use_scale_shift_norm, **resample)

        def attn(ch: int, upsample: bool = False) -> AttentionBlock:
            return AttentionBlock(ch, cfg.heads(ch, upsample), cfg.use_new_attention_order)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))

        # Encoder (unet.py:480-537): per level, num_res_blocks blocks (with attention at the
        # listed rates), then a downsampler except after the last level.
        ch = input_ch = int(cfg.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(3, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                out = int(mult * mc)
                layers: list[nn.Module] = [res(ch, out)]
                ch = out
                if ds in ds_attn:
                    layers.append(attn(ch))
                self.input_blocks.append(TimestepSequential(*layers))
                skips.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = res(ch, down=True) if cfg.resblock_updown else Downsample(ch, True)
                self.input_blocks.append(TimestepSequential(down))
                skips.append(ch)
                ds *= 2

        self.middle_block = TimestepSequential(res(ch), attn(ch), res(ch))  # unet.py:539-563

        # Decoder (unet.py:566-610): per level, num_res_blocks + 1 blocks each taking one skip,
        # the last of them upsampling except at the top level.
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                out = int(mult * mc)
                layers = [res(ch + skips.pop(), out)]
                ch = out
                if ds in ds_attn:
                    layers.append(attn(ch, upsample=True))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, up=True) if cfg.resblock_updown else Upsample(ch, True))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))

        # unet.py:612-616 (input_ch equals ch here: the decoder ends at the first level's width)
        self.out = nn.Sequential(_norm(ch), nn.SiLU(),
                                 _zero(nn.Conv2d(input_ch, cfg.out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The network's output for images `x` (N, 3, H, W) at `timesteps` (N values, or one
        for the whole batch) (unet.py:634-663)."""
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(len(x))
        emb = self.time_embed(timestep_embedding(timesteps, self.config.num_channels))
        hs = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)
