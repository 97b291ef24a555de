"""Finding the weight files of the metric backbones, offline first.

Neither clean-fid nor lpips ships its trunk weights, and both download them at run time (clean-fid
into a temporary folder). adaptscope resolves each file itself, in a fixed order: an explicit
directory (CLI `--weights-dir`), `$ADAPTSCOPE_WEIGHTS_DIR`, the torch hub cache, adaptscope's own
cache, then a download into adaptscope's cache. When all of that fails there is one error that
names the file, every place searched, and where to put the file.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from adaptscope.errors import WeightsNotFound
from adaptscope.metrics.cache import cache_dir

WEIGHTS_ENV = "ADAPTSCOPE_WEIGHTS_DIR"
OFFLINE_ENV = "ADAPTSCOPE_OFFLINE"


@dataclass(frozen=True)
class Backbone:
    """A named weight file: what it is for, and where it can be downloaded (if anywhere)."""

    name: str
    filename: str
    description: str
    url: str


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in [
        Backbone(
            "inception",
            "inception-2015-12-05.pt",
            "Inception-v3 TorchScript used by clean-fid for FID",
            "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
            "inception-2015-12-05.pt",
        ),
        Backbone(
            "vgg",
            "vgg16-397923af.pth",
            "torchvision VGG-16 ImageNet trunk for LPIPS (vgg)",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
        ),
        Backbone(
            "alex",
            "alexnet-owt-7be5be79.pth",
            "torchvision AlexNet ImageNet trunk for LPIPS (alex)",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        ),
        Backbone(
            "resnet18",
            "resnet18-f37072fd.pth",
            "torchvision ResNet-18 ImageNet weights for the realism classifier",
            "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        ),
        Backbone(
            "pytorch-fid-inception",
            "pt_inception-2015-12-05-6726825d.pth",
            "FID Inception-v3 state dict of pytorch-fid (TF inception-2015-12-05 weights)",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
        ),
        Backbone(
            "torchvision-inception",
            "inception_v3_google-0cc3c7bd.pth",
            "torchvision Inception-v3 ImageNet weights (FID as computed by AdAM and RICK)",
            "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
        ),
        Backbone(
            "dinov2-vit-b14",
            "dinov2_vitb14_pretrain.pth",
            "DINOv2 ViT-B/14 (LVD-142M) backbone for FD-DINOv2",
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
        ),
    ]
}


def torch_hub_checkpoints() -> Path:
    """torch hub's checkpoint folder (honours `$TORCH_HOME` and `$XDG_CACHE_HOME`)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_cache() -> Path:
    """Where adaptscope downloads weights to."""
    return cache_dir() / "weights"


def search_dirs(weights_dir: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """The folders searched for weight files, in order, each with a label for messages."""
    dirs: list[tuple[Path, str]] = []
    if weights_dir is not None:
        dirs.append((Path(weights_dir).expanduser(), "--weights-dir"))
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        dirs.append((Path(env).expanduser(), f"${WEIGHTS_ENV}"))
    dirs.append((torch_hub_checkpoints(), "torch hub cache"))
    dirs.append((weights_cache(), "adaptscope cache"))
    dirs.append((cache_dir(), "adaptscope cache root"))
    return dirs


def _download(url: str, dest: Path) -> None:
    """Fetch `url` to `dest` (temporary file in the destination folder, hash-prefix check for
    torchvision's `name-<sha256 prefix>.pth` files)."""
    match = re.search(r"-([0-9a-f]{8,})\.pth$", dest.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # a firewalled network fails instead of hanging
    try:
        torch.hub.download_url_to_file(
            url, str(dest), hash_prefix=match.group(1) if match else None, progress=True
        )
    finally:
        socket.setdefaulttimeout(previous)


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def resolve_weights(
    name: str,
    weights_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
) -> Path:
    """Path of the weight file of backbone `name` (a key of `BACKBONES`).

    Searches `search_dirs(weights_dir)`, then
    downloads into `weights_cache()` when the backbone has a URL, `download` is true and
    `$ADAPTSCOPE_OFFLINE` is unset. Raises `WeightsNotFound` otherwise.
    """
    if name not in BACKBONES:
        raise WeightsNotFound(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}")
    spec = BACKBONES[name]
    places = search_dirs(weights_dir)
    for folder, _ in places:
        candidate = folder / spec.filename
        if candidate.is_file():
            return candidate

    dest = weights_cache() / spec.filename
    if not download:
        reason = "downloads were disabled for this call"
    elif _offline():
        reason = f"downloads are disabled by ${OFFLINE_ENV}"
    else:
        try:
            _download(spec.url, dest)
        except (OSError, RuntimeError, ValueError) as err:
            reason = f"downloading {spec.url} failed ({type(err).__name__}: {err})"
        else:
            return dest
    raise WeightsNotFound(_not_found_message(spec, places, dest, reason))


def _not_found_message(
    spec: Backbone, places: list[tuple[Path, str]], dest: Path, reason: str
) -> str:
    searched = "; ".join(f"{folder} ({label})" for folder, label in places)
    return (f"weights file '{spec.filename}' ({spec.description}) not found, and {reason}. "
            f"Searched: {searched}. Fix: fetch it from {spec.url} on a machine with a network "
            f"and copy it to {dest}, or to a folder passed as metrics.weights_dir (or set "
            f"${WEIGHTS_ENV}); or, for a quick look, measure with the shipped toy network: "
            "--protocol embedded (numbers labelled toy, comparable with nothing else).")
