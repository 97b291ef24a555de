"""Ground-truth diversity in the embedded world, from attributes predicted by the toy net.

Because every ToyFaces image has known attributes, diversity can be measured without a
perceptual proxy: how many of the target domain's attribute combinations the generator still
produces (coverage), and how often it reproduces one of the 10 training shots outright
(replication). These validate intra-cluster LPIPS, which only estimates both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# Attributes that every ToyFaces domain shows (sketches lose colours, sunglasses hide eye size),
# with 3 * 4 * 3 * 3 = 108 combinations: far fewer than the 1,000 samples of the protocol, so
# a healthy generator can cover them all, while one that replicates 10 shots covers at most 10.
COVERAGE_ATTRIBUTES: tuple[str, ...] = ("face_shape", "hair_style", "mouth", "accessory")

Attributes = np.ndarray | torch.Tensor


def attribute_columns(attributes: Sequence[str | int] | None, n_columns: int) -> list[int]:
    """Column indices of `attributes` (ToyFaces names or indices); None means all columns."""
    if attributes is None:
        return list(range(n_columns))
    from adaptscope.embedded.toyfaces import ATTRIBUTE_NAMES

    cols = []
    for a in attributes:
        if isinstance(a, str):
            if a not in ATTRIBUTE_NAMES:
                raise ValueError(f"unknown attribute {a!r}; known: {', '.join(ATTRIBUTE_NAMES)}")
            cols.append(ATTRIBUTE_NAMES.index(a))
        else:
            cols.append(int(a))
    if any(not 0 <= c < n_columns for c in cols):
        raise ValueError(f"attribute columns {cols} out of range for {n_columns} columns")
    return cols


def _rows(attrs: Attributes, cols: list[int], what: str) -> set[tuple[int, ...]]:
    arr = np.asarray(attrs.cpu() if isinstance(attrs, torch.Tensor) else attrs)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be (N, n_attributes), got shape {arr.shape}")
    return {tuple(int(v) for v in row) for row in arr[:, cols]}


def _as_2d(attrs: Attributes) -> np.ndarray:
    return np.asarray(attrs.cpu() if isinstance(attrs, torch.Tensor) else attrs)


def attribute_coverage(
    pred_attrs: Attributes,
    reference_attrs: Attributes,
    attributes: Sequence[str | int] | None = COVERAGE_ATTRIBUTES,
) -> float:
    """Share of the distinct `attributes` combinations of the target's full set
    (`reference_attrs`, (M, A)) that occur among generated samples (`pred_attrs`, (N, A))."""
    ref = _as_2d(reference_attrs)
    cols = attribute_columns(attributes, ref.shape[1] if ref.ndim == 2 else 0)
    wanted = _rows(ref, cols, "reference_attrs")
    if not wanted:
        raise ValueError("reference_attrs is empty")
    return len(wanted & _rows(pred_attrs, cols, "pred_attrs")) / len(wanted)


def shot_replication(
    pred_attrs: Attributes,
    shot_attrs: Attributes,
    attributes: Sequence[str | int] | None = None,
) -> float:
    """Share of generated samples whose predicted attribute vector equals one of the shots'.

    The full vector by default; restrict `attributes` to those the target domain shows
    (`toyfaces.observable`) where the others cannot be predicted, e.g. colours in sketches.
    """
    pred = _as_2d(pred_attrs)
    if pred.ndim != 2 or len(pred) == 0:
        raise ValueError(f"pred_attrs must be a non-empty (N, n_attributes) array, "
                         f"got shape {pred.shape}")
    cols = attribute_columns(attributes, pred.shape[1])
    shots = _rows(shot_attrs, cols, "shot_attrs")
    hits = sum(tuple(int(v) for v in row) in shots for row in pred[:, cols])
    return hits / len(pred)


def nearest_shot_agreement(
    pred_attrs: Attributes,
    shot_attrs: Attributes,
    attributes: Sequence[str | int] | None = None,
) -> float:
    """Mean over samples of the largest share of `attributes` a sample has in common with any
    one shot: about 1/levels-ish for a diverse generator, 1.0 when every sample copies a shot.

    The continuous counterpart of `shot_replication` (which needs an exact match) and the
    ground-truth twin of the nearest-shot LPIPS.
    """
    pred = _as_2d(pred_attrs)
    shots = _as_2d(shot_attrs)
    if pred.ndim != 2 or len(pred) == 0 or shots.ndim != 2 or len(shots) == 0:
        raise ValueError("pred_attrs and shot_attrs must be non-empty (N, n_attributes) arrays")
    cols = attribute_columns(attributes, pred.shape[1])
    same = pred[:, None, cols] == shots[None, :, cols]  # (N, K, A)
    return float(same.mean(axis=2).max(axis=1).mean())
