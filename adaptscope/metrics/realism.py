"""The realism score p_t: how strongly a source-vs-target classifier calls generated images target.

The paper's "realisticness classifier" is a binary classifier trained on real source images vs the
full real target set; p_t is the mean probability it gives generated images of being target. Its
architecture is not published [U]; here it is a torchvision ResNet-18 (trained by
`adaptscope.train.realism_classifier`). Any object with `p_target(x) -> (N,)` scores images: the
embedded world's toy net plays this role through `adaptscope.embedded.backbones.ToyRealism`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from adaptscope.errors import WeightsError
from adaptscope.files import load_weights_only
from adaptscope.images import quantize as quantize_8bit

FORMAT_TAG = "adaptscope.realism/1"


class RealismScorer(Protocol):
    """Anything that scores [-1, 1] images with a probability of being target."""

    def p_target(self, x: torch.Tensor) -> torch.Tensor: ...
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RealismClassifier(nn.Module):
    """ResNet-18 with one logit ("target"), taking [-1, 1] images of any size."""

    def __init__(self, image_size: int = 128):
        super().__init__()
        import torchvision

        self.image_size = image_size
        self.net = torchvision.models.resnet18(weights=None)
        self.net.fc = nn.Linear(self.net.fc.in_features, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.meta: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Target logits (N,)."""
        x = x.float()
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        x = ((x + 1) / 2 - self.mean) / self.std
        return self.net(x).squeeze(1)

    @torch.no_grad()
    def p_target(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) probability of the target domain."""
        return torch.sigmoid(self(x))


def load_realism_classifier(path: str | os.PathLike,
                            device: str | torch.device = "cpu") -> RealismClassifier:
    """A trained classifier (eval mode, `.meta` filled) from its file, loaded weights-only."""
    p = Path(path)
    obj = load_weights_only(p, what="realism classifier",
                            fix="train one with `adaptscope realism train`")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_TAG:
        raise WeightsError(f"{p} is not an adaptscope realism classifier ({FORMAT_TAG}); train "
                           "one with `adaptscope realism train`")
    model = RealismClassifier(int(obj["meta"]["image_size"]))
    model.load_state_dict(obj["state_dict"], strict=True)
    model.meta = dict(obj["meta"])
    return model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def realism_score(
    images: torch.Tensor,
    scorer: RealismScorer,
    *,
    batch_size: int = 64,
    quantize: bool = True,
) -> float:
    """p_t: mean target probability of generated images (N, 3, H, W) in [-1, 1].

    Images are quantised to 8 bits first, like the real images the classifier learnt from.
    """
    if len(images) == 0:
        raise ValueError("no images to score")
    device = next(scorer.parameters()).device if isinstance(scorer, nn.Module) else "cpu"
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].float()
        x = (quantize_8bit(x) if quantize else x).to(device)
        total += scorer.p_target(x).double().sum().item()
    return total / len(images)
