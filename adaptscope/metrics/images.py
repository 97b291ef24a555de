"""8-bit quantisation shared by the metrics.

The reference protocols save generated images as PNGs before measuring them, so every metric
sees 8-bit values. Doing the same in memory keeps adaptscope's numbers equal to those of a
saved-and-reloaded sample set.
"""

from __future__ import annotations

import torch


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
