"""The one place images change form: model tensors in [-1, 1], 8-bit arrays, grids for humans.

The reference protocols save generated images as PNGs before measuring them, so every metric
sees 8-bit values; `quantize` does the same in memory, so adaptscope's numbers equal those of a
saved-and-reloaded sample set.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from adaptscope.files import atomic_write


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) floats in [-1, 1] -> (N, H, W, 3) uint8, rounding like a saved PNG."""
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8_values(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> float tensor of integer values in [0, 255] (clip, then round to
    nearest, as writing a PNG does)."""
    return torch.round(((x.float() + 1.0) * 127.5).clamp(0.0, 255.0))


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> the nearest 8-bit image, mapped back to [-1, 1]."""
    return to_uint8_values(x) / 127.5 - 1.0


def uint8_values_to_unit(x: torch.Tensor) -> torch.Tensor:
    """Float values in [0, 255] -> [-1, 1] (the inverse map of `to_uint8_values`)."""
    return x.float() / 127.5 - 1.0


def make_grid(images: np.ndarray, ncol: int | None = None, pad: int = 2,
              fill: int = 255) -> np.ndarray:
    """Tile (N, H, W, 3) uint8 images into one (rows*H, cols*W, 3) image with padding."""
    n, h, w, c = images.shape
    ncol = ncol or min(n, 8)
    nrow = math.ceil(n / ncol)
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), fill, np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = img
    return grid


def save_grid(images: np.ndarray, path: str | Path, ncol: int | None = None,
              scale: int = 1) -> None:
    """Save a grid PNG (atomically); `scale` enlarges small images (nearest neighbour) for
    viewing."""
    grid = make_grid(images, ncol)
    img = Image.fromarray(grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    atomic_write(path, lambda handle: img.save(handle, format="PNG"))
