"""Batch rasteriser for flat-shaded 2-D shapes, used by the ToyFaces renderer.

Shapes are painted as integer labels on a supersampled canvas (one label plane for a whole
batch), so each shape costs a few vectorised comparisons over the rows and columns it can touch.
Colours are looked up per image only at the end, and the supersampled image is box-averaged down
to the output size, which gives anti-aliased edges without any per-image Python loop.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]


def col(v: np.ndarray) -> np.ndarray:
    """Reshape a per-image vector (n,) so it broadcasts against (n, h, w) pixel grids."""
    return np.asarray(v, dtype=np.float32)[:, None, None]


def ellipse(cx, cy, rx, ry) -> Mask:
    """Inside of an axis-aligned ellipse; parameters are per-image vectors in [0, 1] units."""
    cx, cy, irx, iry = col(cx), col(cy), col(1.0 / np.asarray(rx)), col(1.0 / np.asarray(ry))

    def mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = np.square((x - cx) * irx)
        v = np.square((y - cy) * iry)
        return (u + v) <= 1.0

    return mask


def rect(cx, cy, hw, hh) -> Mask:
    """Inside of an axis-aligned rectangle given by centre and half sizes."""
    cx, cy, hw, hh = col(cx), col(cy), col(hw), col(hh)

    def mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (np.abs(y - cy) <= hh) & (np.abs(x - cx) <= hw)

    return mask


def above(limit) -> Mask:
    """Half-plane y < limit (y grows downwards)."""
    limit = col(limit)
    return lambda x, y: y < limit


def below(limit) -> Mask:
    """Half-plane y > limit."""
    limit = col(limit)
    return lambda x, y: y > limit


def within_x(cx, hw) -> Mask:
    """Vertical strip |x - cx| <= hw."""
    cx, hw = col(cx), col(hw)
    return lambda x, y: np.abs(x - cx) <= hw


def intersect(*masks: Mask) -> Mask:
    def mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = masks[0](x, y)
        for m in masks[1:]:
            out = out & m(x, y)
        return out

    return mask


def union(*masks: Mask) -> Mask:
    def mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = masks[0](x, y)
        for m in masks[1:]:
            out = out | m(x, y)
        return out

    return mask


def minus(keep: Mask, cut: Mask) -> Mask:
    return lambda x, y: keep(x, y) & ~cut(x, y)


class LabelCanvas:
    """A batch of supersampled label images; shapes later painted win."""

    def __init__(self, n: int, size: int, supersample: int) -> None:
        self.n = n
        self.size = size
        self.supersample = supersample
        self.res = size * supersample
        self.labels = np.zeros((n, self.res, self.res), dtype=np.uint8)
        self.coords = ((np.arange(self.res, dtype=np.float32) + 0.5) / self.res).astype(np.float32)

    def _span(self, lo: np.ndarray, hi: np.ndarray) -> slice:
        start = int(np.floor(float(np.min(lo)) * self.res)) - 1
        stop = int(np.ceil(float(np.max(hi)) * self.res)) + 1
        return slice(min(max(start, 0), self.res), min(max(stop, 0), self.res))

    def paint(self, label: int, mask: Mask, box, enabled: np.ndarray | None = None) -> None:
        """Paint `label` where `mask` holds, looking only inside `box` = (x0, y0, x1, y1).

        `box` holds per-image bounds in [0, 1] units that must contain the shape; `enabled`
        (n,) switches the shape off for some images.
        """
        x0, y0, x1, y1 = (np.broadcast_to(np.asarray(b, dtype=np.float32), (self.n,)) for b in box)
        if enabled is not None:
            enabled = np.asarray(enabled, dtype=bool)
            if not enabled.any():
                return
            x0, y0, x1, y1 = x0[enabled], y0[enabled], x1[enabled], y1[enabled]
        rows, cols = self._span(y0, y1), self._span(x0, x1)
        if rows.start >= rows.stop or cols.start >= cols.stop:
            return
        x = self.coords[cols][None, None, :]
        y = self.coords[rows][None, :, None]
        m = mask(x, y)
        if enabled is not None and not enabled.all():
            m = m & enabled[:, None, None]
        np.copyto(self.labels[:, rows, cols], np.uint8(label), where=m)

    def colourise(self, palette: np.ndarray) -> np.ndarray:
        """Look up per-image colours (n, n_labels, 3) and box-downsample to (n, S, S, 3) uint8."""
        n, n_labels, _ = palette.shape
        flat = (np.arange(n, dtype=np.int32) * n_labels)[:, None, None] + self.labels
        out = np.empty((n, self.size, self.size, 3), dtype=np.float32)
        for c in range(3):
            plane = np.take(palette[:, :, c].astype(np.float32).ravel(), flat)
            out[..., c] = downsample(plane, self.supersample)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def downsample(plane: np.ndarray, factor: int) -> np.ndarray:
    """Box-average (n, H, W) by an integer factor."""
    n, h, w = plane.shape
    if factor == 1:
        return plane
    return plane.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def outline(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels within `width` of a boundary between two different labels (n, H, W) bool."""
    edge = np.zeros(labels.shape, dtype=bool)
    k = max(int(width), 1)
    dy = labels[:, k:, :] != labels[:, :-k, :]
    edge[:, k:, :] |= dy
    edge[:, :-k, :] |= dy
    dx = labels[:, :, k:] != labels[:, :, :-k]
    edge[:, :, k:] |= dx
    edge[:, :, :-k] |= dx
    return edge
