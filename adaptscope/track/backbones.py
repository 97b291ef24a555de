"""The one resolver from backbone names in a protocol to the networks that compute metrics.

A protocol names its networks (`metrics.fid_backbone`, `metrics.lpips_backbone`,
`metrics.realism`); these registries turn each name into a network built without hidden
downloads, and an unknown name fails listing the known ones. The real backbones come from
`adaptscope.metrics`, the toy ones from `adaptscope.embedded`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from torch import nn

from adaptscope.embedded.backbones import ToyExtractor, ToyRealism
from adaptscope.embedded.toynet import load_toynet
from adaptscope.errors import ConfigError
from adaptscope.metrics.backbones import build_lpips
from adaptscope.metrics.extractors import (
    CLIPExtractor,
    DINOv2Extractor,
    FeatureExtractor,
    InceptionExtractor,
    PytorchFIDExtractor,
    TorchvisionInceptionExtractor,
)
from adaptscope.metrics.realism import RealismScorer, load_realism_classifier
from adaptscope.registry import Registry

WeightsDir = str | os.PathLike | None

FID_BACKBONES: Registry[Callable[[WeightsDir, str], FeatureExtractor]] = Registry(
    "FID backbone", " (metrics.fid_backbone)")
FID_BACKBONES.register("inception", InceptionExtractor)
FID_BACKBONES.register("pytorch-fid", PytorchFIDExtractor)
FID_BACKBONES.register("torchvision-inception", TorchvisionInceptionExtractor)
FID_BACKBONES.register("dinov2-vit-b14", DINOv2Extractor)
FID_BACKBONES.register("toy", lambda weights_dir, device: ToyExtractor())
# CMMD's embedding (metrics.cmmd_backbone): a feature extractor like the FID ones, so its real
# features are cached the same way
FID_BACKBONES.register("clip-vit-l14-336", CLIPExtractor)

LPIPS_BACKBONES: Registry[Callable[[WeightsDir], nn.Module]] = Registry(
    "LPIPS backbone", " (metrics.lpips_backbone)")
LPIPS_BACKBONES.register("vgg", lambda weights_dir: build_lpips("vgg", weights_dir))
LPIPS_BACKBONES.register("alex", lambda weights_dir: build_lpips("alex", weights_dir))
LPIPS_BACKBONES.register("toy", lambda weights_dir: load_toynet())

REALISM_SCORERS = ("none", "toy", "classifier")


def build_extractor(name: str, weights_dir: WeightsDir = None,
                    device: str = "cpu") -> FeatureExtractor:
    return FID_BACKBONES.get(name)(weights_dir, device)


def lpips_net(name: str, weights_dir: WeightsDir = None) -> nn.Module:
    return LPIPS_BACKBONES.get(name)(weights_dir)


def realism_scorer(name: str, classifier: str, domain: str | None) -> RealismScorer | None:
    """The p_t scorer: none, the toy net's head for a ToyFaces `domain`, or a classifier file
    trained by `adaptscope realism train`."""
    if name == "none":
        return None
    if name == "toy":
        if domain is None:
            raise ConfigError("metrics.realism = 'toy' needs a toyfaces target; for real data "
                              "train a classifier with `adaptscope realism train` and set "
                              "metrics.realism = 'classifier', metrics.realism_classifier = PATH")
        return ToyRealism(domain)
    if name == "classifier":
        if not classifier:
            raise ConfigError("metrics.realism = 'classifier' needs metrics.realism_classifier "
                              "= PATH of a classifier from `adaptscope realism train`")
        return load_realism_classifier(classifier)
    raise ConfigError(f"metrics.realism must be one of {', '.join(REALISM_SCORERS)}, "
                      f"got {name!r}")
