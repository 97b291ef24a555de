"""Real-set features for FID and its companions: reading the image set, identifying it,
caching its features on disk.

Target sets are fixed for a whole study, so their features are extracted once per image set,
backbone, resolution and protocol and kept in the user cache (`<cache>/fid-stats/`). Features,
not only (mu, sigma), because KID and precision/recall/density/coverage need the points. The key
hashes image *content*, so a renamed folder reuses its features and an edited one does not.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from adaptscope.data import folder as data_folder
from adaptscope.errors import DataError
from adaptscope.files import atomic_write
from adaptscope.metrics.cache import cache_dir

PROTOCOL_VERSION = 2  # 2: the cache holds features (1 held mu and sigma)


class FIDStats(NamedTuple):
    """Mean and covariance of a real set's features, and how many images made them."""

    mu: np.ndarray
    sigma: np.ndarray
    n_images: int


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder` (recursive, sorted): the one lister of `adaptscope.data`."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder; FID's real set "
                        "is read from a folder of images (or passed as a tensor)")
    return [root / name for name in data_folder.list_images(root)]


def read_uint8(path: Path) -> np.ndarray:
    """One image file as an RGB uint8 (H, W, 3) array, decoded as clean-fid decodes it."""
    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}; re-export the file or remove "
                        "it") from err


def content_digest(source: str | os.PathLike | torch.Tensor) -> str:
    """Order- and name-independent hash of an image set (file bytes, or uint8 pixels)."""
    if isinstance(source, torch.Tensor):
        items = (
            hashlib.sha256(str(tuple(img.shape)).encode() + img.contiguous().numpy().tobytes())
            .hexdigest()
            for img in source.cpu()
        )
    else:
        items = (hashlib.sha256(p.read_bytes()).hexdigest() for p in list_images(source))
    digest = hashlib.sha256()
    for item in sorted(items):
        digest.update(item.encode())
    return digest.hexdigest()


def iter_uint8_images(source: str | os.PathLike | torch.Tensor) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 arrays from a folder or from a uint8 (N, 3, H, W) tensor."""
    if isinstance(source, torch.Tensor):
        for img in source.cpu():
            yield img.permute(1, 2, 0).contiguous().numpy()
    else:
        for path in list_images(source):
            yield read_uint8(path)


def stats_key(content: str, backbone: str, resolution: int | None, protocol: dict) -> str:
    """Cache key of real-set statistics."""
    payload = json.dumps(
        {"content": content, "backbone": backbone, "resolution": resolution,
         "protocol": protocol, "version": PROTOCOL_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def stats_dir() -> Path:
    """Folder of cached real-set statistics."""
    return cache_dir() / "fid-stats"


def load_cached(key: str, folder: Path | None = None) -> np.ndarray | None:
    """Cached real features (N, D) for `key`, or None (also when the file is unreadable)."""
    path = (folder or stats_dir()) / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["features"]
    except (OSError, ValueError, KeyError):
        return None


def save_cached(key: str, features: np.ndarray, meta: dict, folder: Path | None = None) -> Path:
    """Write real features atomically; `meta` (JSON) records what they were computed from."""
    path = (folder or stats_dir()) / f"{key}.npz"

    def write(handle) -> None:
        np.savez(handle, features=features, meta=np.array(json.dumps(meta, sort_keys=True)))

    return atomic_write(path, write)
