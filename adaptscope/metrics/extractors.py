"""FID feature extractors: one calling convention for clean-fid's Inception and the toy net.

An extractor maps a batch of images holding 8-bit values as floats in [0, 255], shape
(N, 3, S, S), to features (N, D). `input_size` is the side that clean-fid's "clean" resizer (PIL
bicubic on float images) brings every image to before the call; None means the extractor takes
any size. `name` identifies backbone and weights, so cached real-set statistics are never reused
across backbones.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch

from adaptscope.metrics.images import uint8_values_to_unit


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


class ToyExtractor(FeatureExtractor):
    """The embedded world's feature network (`ToyNet.embed`, which takes [-1, 1] images)."""

    input_size = None

    def __init__(self, net=None, name: str | None = None):
        if net is None:
            from adaptscope.metrics.toynet import load_toynet

            net = load_toynet()
        self.net = net
        self.name = name or f"toy/{_module_fingerprint(net)}"
        params = list(net.parameters()) if hasattr(net, "parameters") else []
        self.device = params[0].device if params else torch.device("cpu")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net.embed(uint8_values_to_unit(x).to(self.device)).float().cpu()


def _module_fingerprint(net) -> str:
    """Short hash of a module's parameters and buffers (identifies the toy net's weights)."""
    digest = hashlib.sha256()
    state = net.state_dict() if hasattr(net, "state_dict") else {}
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def build_extractor(
    backbone: str | FeatureExtractor,
    weights_dir: str | os.PathLike | Path | None = None,
    device: str | torch.device = "cpu",
) -> FeatureExtractor:
    """`"inception"` or `"toy"` -> an extractor; an extractor is returned unchanged."""
    if isinstance(backbone, FeatureExtractor):
        return backbone
    if backbone == "inception":
        return InceptionExtractor(weights_dir, device)
    if backbone == "toy":
        return ToyExtractor()
    raise ValueError(f"FID backbone must be 'inception' or 'toy', got {backbone!r}")
