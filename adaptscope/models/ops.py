"""Pure-PyTorch resampling and activation ops of StyleGAN2, with no compiled extension.

The reference implementation compiles CUDA kernels at import time and falls back on the CPU to a
slow, reshape-heavy emulation. These functions compute the same operations (same kernels, same
padding conventions) with one grouped convolution each, so they run on any device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """leaky_relu(x + bias, 0.2) * sqrt(2), the activation used after every biased layer.

    `bias` is per channel (dimension 1 of `x`).
    """
    if bias is not None:
        shape = [1, -1] + [1] * (x.ndim - 2)
        x = x + bias.view(shape)
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


def make_kernel(taps: Sequence[float]) -> torch.Tensor:
    """The normalised 2-D FIR kernel (outer product of `taps`, summing to one)."""
    k = torch.tensor(taps, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with `kernel` (true convolution), decimate.

    Same operation and padding convention as the reference's `upfirdn2d(input, kernel, up, down,
    pad)` with the same padding on both axes. Upsampling is done as a transposed convolution
    (which is zero insertion followed by the filter) and the remaining pad as a crop or pad, so
    the work is one grouped convolution per call.
    """
    channels = x.shape[1]
    k = kernel.to(dtype=x.dtype, device=x.device)
    kh, kw = k.shape
    pad0, pad1 = pad
    if up > 1:
        # z[m] = sum_i x[i] k[m - i*up] has length (n-1)*up + K; the reference output is
        # z shifted left by K - 1 - pad0 and of length n*up + pad0 + pad1 - K + 1.
        weight = k.expand(channels, 1, kh, kw)
        out = F.conv_transpose2d(x, weight, stride=up, groups=channels)
        left, right = pad0 - (kh - 1), pad1 + up - kh
        out = F.pad(out, [left, right, left, right])
        return out[:, :, ::down, ::down] if down > 1 else out
    out = F.pad(x, [pad0, pad1, pad0, pad1])
    weight = torch.flip(k, [0, 1]).expand(channels, 1, kh, kw)
    return F.conv2d(out, weight, stride=down, groups=channels)


class Blur(nn.Module):
    """FIR low-pass filter with explicit padding (the anti-aliasing step around strided convs)."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        kernel = make_kernel(taps)
        if upsample_factor > 1:
            kernel = kernel * (upsample_factor**2)
        self.register_buffer("kernel", kernel)
        self.pad = pad

    def extra_repr(self) -> str:
        return f"taps={tuple(self.kernel.shape)}, pad={self.pad}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x upsampling with the FIR filter (used on the RGB skip path)."""

    def __init__(self, taps: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        kernel = make_kernel(taps) * (factor**2)
        self.register_buffer("kernel", kernel)
        p = kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, pad={self.pad}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)
