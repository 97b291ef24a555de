"""ToyNet: the embedded world's metric network (offline FID, LPIPS and realism backbone).

A small CNN trained on all four ToyFaces domains to tell the domain and every ground-truth
attribute apart, so its features measure exactly the variation the world contains:

- ``embed`` (128-d) is the FID feature; it is a linear map of the whole last feature map rather
  than a global average, so that where the head sits (an attribute) stays visible to FID.
- ``lpips_features`` are the four conv stages' activations. ``lpips_weights`` are uniform,
  1/L on every channel of each of the L layers, so the distance
  ``sum_l mean_hw sum_c w_c (n0 - n1)^2`` over channel-unit-normalised features is the plain
  average of per-layer cosine distances (no layer is favoured; it lies in [0, 4]).
- ``p_target`` is the binary source-vs-target realism probability, softmax over the source and
  target domain logits, as the paper's realism classifier scores generated images.

Inputs are [-1, 1] images of any size, resized (bilinear, antialiased) to 32 px.
The shipped weights live in ``adaptscope/embedded/assets/toynet.pt`` and are rebuilt by
``adaptscope pretrain backbone`` with the recipe in ``experiments/pretrain-backbone.toml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from adaptscope.embedded import asset, toyfaces
from adaptscope.errors import WeightsError
from adaptscope.files import load_weights_only, save_torch
from adaptscope.metrics.lpips_embed import LPIPSNet

NATIVE_SIZE = 32
FORMAT_TAG = "adaptscope.toynet/1"
ASSET_NAME = "toynet.pt"
# Identities the network trains on: outside every target's FULL_SET and the source GAN's range,
# so the held-out evaluation on FULL_SET images (and source-range images) is honest.
TRAIN_RANGE = range(3_000_000, 4_000_000)


def _conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.2)]


class ToyNet(LPIPSNet):
    """Four conv stages (32-64-128-128 channels, each ending in a stride-2 conv: 32 -> 2 px),
    a 128-d embedding, a domain head and one classification head per attribute."""

    backbone_name = "toy"
    default_input_size = None  # resized inside, to NATIVE_SIZE

    def __init__(
        self,
        channels: tuple[int, ...] = (32, 64, 128, 128),
        embed_dim: int = 128,
        attribute_levels: tuple[int, ...] = tuple(a.levels for a in toyfaces.ATTRIBUTES),
        n_domains: int = len(toyfaces.DOMAINS),
    ) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.config = {
            "channels": list(channels),
            "embed_dim": embed_dim,
            "attribute_levels": list(attribute_levels),
            "n_domains": n_domains,
        }
        # Early stages get a full-resolution conv before downsampling: small attributes (eye
        # size, earrings) are one or two pixels wide at 32 px.
        self.stages = nn.ModuleList(
            [
                nn.Sequential(*_conv(3, c1, 1), *_conv(c1, c1, 2)),
                nn.Sequential(*_conv(c1, c2, 1), *_conv(c2, c2, 2)),
                nn.Sequential(*_conv(c2, c3, 2)),
                nn.Sequential(*_conv(c3, c4, 2)),
            ]
        )
        final = NATIVE_SIZE // 16
        self.embedding = nn.Sequential(
            nn.Flatten(), nn.Linear(c4 * final * final, embed_dim), nn.LeakyReLU(0.2)
        )
        self.domain_head = nn.Linear(embed_dim, n_domains)
        self.attribute_heads = nn.ModuleList(nn.Linear(embed_dim, k) for k in attribute_levels)
        for k, c in enumerate(channels):
            self.register_buffer(f"lpips_w{k}", torch.full((c,), 1.0 / len(channels)))

    @property
    def lpips_weights(self) -> list[torch.Tensor]:
        """Non-negative per-channel LPIPS weights, one (C_l,) tensor per layer."""
        return [getattr(self, f"lpips_w{k}") for k in range(len(self.stages))]

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"ToyNet expects (N, 3, H, W) images in [-1, 1], got {tuple(x.shape)}")
        x = x.float()
        if tuple(x.shape[-2:]) != (NATIVE_SIZE, NATIVE_SIZE):
            x = F.interpolate(
                x, size=(NATIVE_SIZE, NATIVE_SIZE), mode="bilinear", align_corners=False,
                antialias=True,
            )
        return x

    def lpips_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Raw (unnormalised) activations of each conv stage."""
        h = self._prepare(x)
        feats = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, embed_dim) feature for FID."""
        return self.embedding(self.lpips_features(x)[-1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        e = self.embed(x)
        return self.domain_head(e), [head(e) for head in self.attribute_heads]

    def domain_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 4) logits in ``toyfaces.DOMAINS`` order."""
        return self.domain_head(self.embed(x))

    def p_target(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """(N,) probability of `domain` against the source: softmax over the two logits."""
        if domain not in toyfaces.TARGET_DOMAINS:
            raise ValueError(
                f"p_target needs a target domain ({', '.join(toyfaces.TARGET_DOMAINS)}), "
                f"got {domain!r}"
            )
        logits = self.domain_logits(x)
        t = toyfaces.DOMAINS.index(domain)
        return torch.sigmoid(logits[:, t] - logits[:, 0])

    def attribute_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One (N, levels) logit tensor per attribute, in ``toyfaces.ATTRIBUTES`` order."""
        e = self.embed(x)
        return [head(e) for head in self.attribute_heads]

    def predict_attributes(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n_attributes) int64 predicted levels."""
        return torch.stack([lg.argmax(dim=1) for lg in self.attribute_logits(x)], dim=1)

    def lpips_distance(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """(N,) LPIPS-form distance between paired images, with this net's features."""
        total = torch.zeros((), device=self.lpips_w0.device)
        for f0, f1, w in zip(
            self.lpips_features(x0), self.lpips_features(x1), self.lpips_weights, strict=True
        ):
            n0 = f0 / (f0.norm(dim=1, keepdim=True) + 1e-10)
            n1 = f1 / (f1.norm(dim=1, keepdim=True) + 1e-10)
            diff = (n0 - n1).square() * w.view(1, -1, 1, 1)
            total = total + diff.sum(dim=1).mean(dim=(1, 2))
        return total


# --- files -------------------------------------------------------------------------------------


def default_asset() -> Path:
    """Path of the shipped weights inside the installed package."""
    return asset(ASSET_NAME)


def save_toynet(net: ToyNet, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write weights, architecture and `meta` (plain data) atomically; loadable weights-only."""
    obj = {
        "format": FORMAT_TAG,
        "config": net.config,
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "meta": dict(meta or {}),
    }
    save_torch(obj, path)
    Path(path).chmod(0o644)  # a shipped asset must be readable by every user of the install
    return Path(path)


def read_toynet_meta(path: str | Path | None = None) -> dict[str, Any]:
    """The metadata stored with a ToyNet file (held-out accuracies, recipe, versions)."""
    return _read(path)["meta"]


def _read(path: str | Path | None) -> dict[str, Any]:
    p = default_asset() if path is None else Path(path)
    obj = load_weights_only(p, what="ToyNet weights file",
                            fix=f"rebuild it with `adaptscope pretrain backbone --out {p}` "
                                "(recipe: experiments/pretrain-backbone.toml)")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_TAG:
        raise WeightsError(f"{p} is not a ToyNet file (expected format {FORMAT_TAG!r}); rebuild "
                           "it with `adaptscope pretrain backbone`")
    return obj


def load_toynet(path: str | Path | None = None) -> ToyNet:
    """Load ToyNet weights (default: the shipped asset) as a frozen network in eval mode."""
    obj = _read(path)
    cfg = obj["config"]
    net = ToyNet(
        channels=tuple(cfg["channels"]),
        embed_dim=cfg["embed_dim"],
        attribute_levels=tuple(cfg["attribute_levels"]),
        n_domains=cfg["n_domains"],
    )
    net.load_state_dict(obj["state_dict"], strict=True)
    return net.eval().requires_grad_(False)
