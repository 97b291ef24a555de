"""The toy metric network behind the metrics' interfaces: FID features, LPIPS, realism p_t.

`ToyNet` is itself an `LPIPSNet`; these adapters give its FID embedding and its source-vs-target
head the calling conventions of `FeatureExtractor` and of a realism scorer.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from adaptscope.embedded.toynet import ToyNet, load_toynet
from adaptscope.images import uint8_values_to_unit
from adaptscope.metrics.extractors import FeatureExtractor


def module_fingerprint(net: nn.Module) -> str:
    """Short hash of a module's parameters and buffers (identifies the toy net's weights, so
    cached real statistics are never reused across different weights)."""
    digest = hashlib.sha256()
    state = net.state_dict()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


class ToyExtractor(FeatureExtractor):
    """The toy net's FID embedding (`ToyNet.embed`, which takes [-1, 1] images of any size)."""

    input_size = None

    def __init__(self, net: ToyNet | None = None, name: str | None = None):
        self.net = load_toynet() if net is None else net
        self.name = name or f"toy/{module_fingerprint(self.net)}"
        params = list(self.net.parameters())
        self.device = params[0].device if params else torch.device("cpu")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net.embed(uint8_values_to_unit(x).to(self.device)).float().cpu()


class ToyRealism:
    """p_t of one ToyFaces target domain: the toy net's softmax over source and target."""

    def __init__(self, domain: str, net: ToyNet | None = None):
        self.net = load_toynet() if net is None else net
        self.domain = domain

    @torch.no_grad()
    def p_target(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.p_target(x, self.domain)
