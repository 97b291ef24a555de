"""FID feature extractors: one calling convention for every FID backbone.

An extractor maps a batch of images holding 8-bit values as floats in [0, 255], shape
(N, 3, S, S), to features (N, D). `input_size` is the side that clean-fid's "clean" resizer (PIL
bicubic on float images) brings every image to before the call; None means the extractor takes
any size. `name` identifies backbone and weights, so cached real-set statistics are never reused
across backbones.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch


class FeatureExtractor:
    """Callable (N, 3, S, S) floats in [0, 255] -> (N, D) features."""

    name: str = "custom"
    input_size: int | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class FunctionExtractor(FeatureExtractor):
    """Wraps any function with the extractor convention (custom backbones, tests)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str,
                 input_size: int | None = 299):
        self.fn = fn
        self.name = name
        self.input_size = input_size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.fn(x)


class InceptionExtractor(FeatureExtractor):
    """clean-fid's Inception-v3 (pool3, 2048-D) in its "clean" mode."""

    input_size = 299

    def __init__(self, weights_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu"):
        from adaptscope.metrics.backbones import build_inception

        self.device = torch.device(device)
        self.model = build_inception(weights_dir, self.device)
        self.name = "inception-2015-12-05/clean-fid"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(x.to(self.device)).float().cpu()
