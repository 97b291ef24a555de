"""Building the real metric backbones from resolved weight files, without hidden downloads.

`lpips.LPIPS` fetches its trunk through torchvision unless `pnet_rand=True`; clean-fid fetches
Inception into a temporary folder unless told otherwise. Here the network is always built without
a download and the file found by `resolve_weights` is loaded explicitly.
"""

from __future__ import annotations

import contextlib
import os
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from adaptscope.errors import WeightsError
from adaptscope.files import load_weights_only
from adaptscope.metrics.weights import resolve_weights

LPIPS_NETS = ("vgg", "alex")


@contextlib.contextmanager
def _vgg_trunk_only() -> Iterator[None]:
    """Let lpips build VGG-16 without its classifier: lpips keeps only `.features`, and the
    classifier (124 M parameters) would cost seconds and 500 MB of memory to initialise."""
    import lpips.pretrained_networks as pn
    import torchvision

    def vgg16(pretrained: bool = False, **_: object) -> types.SimpleNamespace:
        if pretrained:
            raise RuntimeError("adaptscope loads VGG weights itself; pretrained must be False")
        cfg = torchvision.models.vgg.cfgs["D"]
        return types.SimpleNamespace(features=torchvision.models.vgg.make_layers(cfg))

    original = pn.tv
    pn.tv = types.SimpleNamespace(vgg16=vgg16, alexnet=original.alexnet,
                                  squeezenet1_1=original.squeezenet1_1)
    try:
        yield
    finally:
        pn.tv = original


def new_lpips(net: str = "vgg") -> nn.Module:
    """An `lpips.LPIPS` with the shipped linear heads and a random trunk (no download)."""
    import lpips

    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS backbone must be one of {LPIPS_NETS}, got {net!r}")
    with warnings.catch_warnings(), _vgg_trunk_only():
        # torchvision warns about the deprecated `pretrained` argument that lpips passes.
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()


def load_lpips_trunk(model: nn.Module, state_dict: dict, source: str = "state dict") -> None:
    """Copy a torchvision VGG-16 / AlexNet state dict (`features.<i>.*` keys) into the trunk
    of an `lpips.LPIPS` model, whose slices keep torchvision's layer indices as names."""
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    mapped: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    trunk = model.net
    for name, tensor in trunk.state_dict().items():
        _, index, leaf = name.split(".", 2)  # "slice<k>.<i>.<weight|bias>"
        key = f"features.{index}.{leaf}"
        if key not in state:
            missing.append(key)
            continue
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"{source}: '{key}' has shape {tuple(state[key].shape)}, the {model.pnet_type} "
                f"trunk expects {tuple(tensor.shape)}; is this the right network's file?"
            )
        mapped[name] = state[key]
    if missing:
        raise ValueError(
            f"{source} is not a torchvision {model.pnet_type} state dict: missing "
            f"{len(missing)} trunk entries (first: {missing[0]})"
        )
    trunk.load_state_dict(mapped, strict=True)


def build_lpips(net: str = "vgg", weights_dir: str | os.PathLike | None = None) -> nn.Module:
    """`lpips.LPIPS(net)` v0.1 with ImageNet trunk weights from `resolve_weights(net)`."""
    model = new_lpips(net)
    path = resolve_weights(net, weights_dir)
    state = _load_state(path)
    load_lpips_trunk(model, state, source=str(path))
    return model


def build_inception(
    weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """clean-fid's `InceptionV3W` (clean mode: expects 299x299 inputs in [0, 255])."""
    from cleanfid.inception_torchscript import InceptionV3W

    path = resolve_weights("inception", weights_dir)
    try:
        model = InceptionV3W(str(path.parent), download=False, resize_inside=False)
    except RuntimeError as err:
        raise ValueError(f"{path} is not a loadable Inception TorchScript file: {err}") from err
    return model.to(device).eval()


def _load_state(path: Path) -> dict:
    state = load_weights_only(path, what="state dict", fix="it could not be loaded: delete it so "
                              "that it is fetched again, or replace it with the right file")
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state
