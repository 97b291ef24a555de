"""Finding the weight files of the metric backbones, offline first.

Neither clean-fid nor lpips ships its trunk weights, and both download them at run time (clean-fid
into a temporary folder). adaptscope resolves each file itself, in a fixed order: an explicit
directory (CLI `--weights-dir`), `$ADAPTSCOPE_WEIGHTS_DIR`, the torch hub cache, adaptscope's own
cache, then a download into adaptscope's cache. When all of that fails there is one error that
names the file, every place searched, and where to put the file.

Hugging Face models (CLIP for CMMD) are folders, not files: `resolve_weights_dir` looks for the
folder under the same places, then in the Hugging Face hub cache, and downloads only the files
the model needs (never when offline).
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


# --------------------------------------------------------------------------- model folders

HF_OFFLINE_ENV = "HF_HUB_OFFLINE"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class FolderBackbone:
    """A Hugging Face model stored as a folder: `config.json` and one of `weight_files`."""

    name: str
    folder: str  # the folder's name wherever it is searched for
    repo_id: str  # the Hugging Face hub repository it comes from
    description: str
    weight_files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"


FOLDER_BACKBONES: dict[str, FolderBackbone] = {
    b.name: b
    for b in [
        FolderBackbone(
            "clip-vit-l14-336",
            "clip-vit-large-patch14-336",
            "openai/clip-vit-large-patch14-336",
            "OpenAI CLIP ViT-L/14 at 336 px (image tower and projection) for CMMD",
        ),
    ]
}


def is_model_folder(path: Path, spec: FolderBackbone) -> bool:
    """Whether `path` holds the files `spec`'s model loads from."""
    return (path / CONFIG_FILE).is_file() and any((path / w).is_file()
                                                   for w in spec.weight_files)


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, read from the environment at each call (as huggingface_hub
    does at import): `$HF_HUB_CACHE`, `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub`, or
    `~/.cache/huggingface/hub`."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _hub_snapshots(spec: FolderBackbone) -> list[Path]:
    """The cached snapshots of `spec.repo_id`, the one `refs/main` names first."""
    repo = hf_hub_cache() / f"models--{spec.repo_id.replace('/', '--')}"
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return []
    found = sorted(p for p in snapshots.iterdir() if p.is_dir())
    ref = repo / "refs" / "main"
    if ref.is_file():
        main = snapshots / ref.read_text().strip()
        found = [main] + [p for p in found if p != main]
    return found


def _download_dir(spec: FolderBackbone, dest: Path) -> None:
    """Fetch `config.json` and one weight file of `spec.repo_id` into `dest`, through a partial
    folder beside it, so an interrupted download never looks complete."""
    from huggingface_hub import HfApi, hf_hub_download

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # a firewalled network fails instead of hanging
    try:
        files = set(HfApi().list_repo_files(spec.repo_id))
        weights = next((w for w in spec.weight_files if w in files), None)
        if weights is None:
            raise ValueError(f"{spec.repo_id} holds none of {', '.join(spec.weight_files)}")
        partial = dest.with_name(dest.name + ".partial")
        for name in (CONFIG_FILE, weights):
            hf_hub_download(spec.repo_id, name, local_dir=partial)
    finally:
        socket.setdefaulttimeout(previous)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial.replace(dest)


def _hf_offline() -> bool:
    return os.environ.get(HF_OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def resolve_weights_dir(
    name: str,
    weights_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
) -> Path:
    """Folder of the Hugging Face model `name` (a key of `FOLDER_BACKBONES`).

    Looks for a folder named `spec.folder` holding `config.json` and a weight file under each of
    `search_dirs(weights_dir)`, then for a cached snapshot in the Hugging Face hub cache, then
    downloads into `weights_cache()` when `download` is true and neither
    `$ADAPTSCOPE_OFFLINE` nor `$HF_HUB_OFFLINE` is set. Raises `WeightsNotFound` otherwise,
    naming the folder, its files, every place searched and where to put it.
    """
    if name not in FOLDER_BACKBONES:
        raise WeightsNotFound(f"unknown model folder {name!r}; known: "
                              f"{', '.join(sorted(FOLDER_BACKBONES))}")
    spec = FOLDER_BACKBONES[name]
    places = [(folder / spec.folder, label) for folder, label in search_dirs(weights_dir)]
    incomplete = []
    for candidate, _ in places:
        if is_model_folder(candidate, spec):
            return candidate
        if candidate.is_dir():
            incomplete.append(candidate)
    for snapshot in _hub_snapshots(spec):
        if is_model_folder(snapshot, spec):
            return snapshot
    places.append((hf_hub_cache() / f"models--{spec.repo_id.replace('/', '--')}",
                   "Hugging Face hub cache"))

    dest = weights_cache() / spec.folder
    if not download:
        reason = "downloads were disabled for this call"
    elif _offline():
        reason = f"downloads are disabled by ${OFFLINE_ENV}"
    elif _hf_offline():
        reason = f"downloads are disabled by ${HF_OFFLINE_ENV}"
    else:
        try:
            _download_dir(spec, dest)
        except (OSError, RuntimeError, ValueError, ImportError) as err:
            reason = f"downloading {spec.url} failed ({type(err).__name__}: {err})"
        else:
            return dest
    raise WeightsNotFound(_folder_not_found_message(spec, places, incomplete, dest, reason))


def _folder_not_found_message(spec: FolderBackbone, places: list[tuple[Path, str]],
                              incomplete: list[Path], dest: Path, reason: str) -> str:
    searched = "; ".join(f"{folder} ({label})" for folder, label in places)
    weights = " or ".join(spec.weight_files)
    partial = ("" if not incomplete else " Found without config.json and a weight file: "
               + "; ".join(str(p) for p in incomplete) + ".")
    return (f"model folder '{spec.folder}' ({spec.description}: {CONFIG_FILE} and {weights}) "
            f"not found, and {reason}. Searched: {searched}.{partial} Fix: on a machine with a "
            f"network run `hf download {spec.repo_id} {CONFIG_FILE} "
            f"{spec.weight_files[-1]} --local-dir {spec.folder}` (files from {spec.url}) and "
            f"copy that folder to {dest}, or into a folder passed as metrics.weights_dir (or "
            f"${WEIGHTS_ENV}).")
