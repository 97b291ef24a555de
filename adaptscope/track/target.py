"""The target of a run: its full set (what FID is measured against) and its few shots.

One way to name it, whether embedded (``toyfaces:<domain>``, rendered) or an image folder or zip
(read by `adaptscope.data`). Training adapts on the shots; tracking measures against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from adaptscope.data.folder import few_shot_subset, list_images, load_images, read_shots_file
from adaptscope.embedded import TOYFACES_PREFIX, toyfaces
from adaptscope.errors import DataError


class TargetData(NamedTuple):
    """The tensors a run adapts on and evaluates against, with a readable provenance line."""

    full: torch.Tensor
    shots: torch.Tensor
    description: str
    domain: str | None = None  # the ToyFaces domain (known attributes); None for a folder
    shot_indices: np.ndarray | None = None  # the shots' ToyFaces indices
    # Held out of `full` for choosing an iteration (`target.validation_fraction`); never a shot.
    validation: torch.Tensor | None = None


# The validation split is drawn by target.shots_seed plus this, so it differs from the shots'
# draw and stays the same for every method and seed of a study.
VALIDATION_SEED_OFFSET = 7919
MIN_VALIDATION_IMAGES = 2  # a covariance needs two


def split_validation(target: TargetData, shot_positions: Sequence[int], fraction: float,
                     seed: int) -> TargetData:
    """`target` with round(fraction x its full set) images, drawn by `seed` among those that are
    not shots, moved from `full` (what FID reports against) to `validation` (what selects), so
    the two sets are disjoint. A fraction of 0 leaves it as it is."""
    if not fraction:
        return target
    n_full = len(target.full)
    n_val = round(fraction * n_full)
    candidates = np.setdiff1d(np.arange(n_full), np.asarray(shot_positions, dtype=np.int64))
    if n_val < MIN_VALIDATION_IMAGES or n_val > len(candidates):
        raise DataError(
            f"{target.description}: target.validation_fraction = {fraction} holds out {n_val} "
            f"of {n_full} images, but it needs at least {MIN_VALIDATION_IMAGES} and at most the "
            f"{len(candidates)} that are not shots; choose a fraction between "
            f"{MIN_VALIDATION_IMAGES / n_full:.3g} and {len(candidates) / n_full:.3g}")
    rng = np.random.default_rng(seed + VALIDATION_SEED_OFFSET)
    held = np.sort(rng.choice(candidates, size=n_val, replace=False))
    keep = np.setdiff1d(np.arange(n_full), held)
    description = (f"{target.description}; validation: {n_val} non-shot images held out "
                   f"(target.validation_fraction = {fraction})")
    return target._replace(full=target.full[torch.from_numpy(keep)],
                           validation=target.full[torch.from_numpy(held)],
                           description=description)


def load_target(
    spec: str,
    size: int,
    shots: int = 10,
    seed: int = 0,
    files: Sequence[str] | None = None,
    shots_file: str | Path | None = None,
    validation_fraction: float | None = None,
) -> TargetData:
    """Resolve `spec` to (full set, shots, description).

    For ToyFaces the shots are drawn from the target's FULL_SET by `seed`; for a folder or zip
    they are `files` if given, or the names listed in `shots_file` (see `read_shots_file`),
    else a seeded draw from the sorted listing. In every case the shots are members of the full
    set, as in the paper's protocol. With a `validation_fraction`, that part of the full set
    (never a shot) is held out of it as `validation` (`split_validation`).
    """
    if shots_file:
        if spec.startswith(TOYFACES_PREFIX):
            raise DataError(f"shots file {Path(shots_file)} applies to image folders, not to "
                            f"the ToyFaces domain {spec}; remove target.shots_file")
        if files is not None:
            raise DataError(f"shots file {Path(shots_file)} and explicit shot files both name "
                            "the shots; keep one of target.files and target.shots_file")
    if spec.startswith(TOYFACES_PREFIX):
        target = _toyfaces(spec[len(TOYFACES_PREFIX) :], size, shots, seed, files)
        positions = target.shot_indices - toyfaces.FULL_SET[target.domain].start
        return split_validation(target, positions.tolist(), validation_fraction or 0.0, seed)
    if shots_file:
        files = read_shots_file(shots_file, spec, shots)
    names = few_shot_subset(spec, shots, seed=seed, files=files)
    full = load_images(spec, size)
    few = load_images(spec, size, files=names)
    listed = f"shots listed in {Path(shots_file)}" if shots_file else "shots"
    desc = f"{Path(spec)} ({full.shape[0]} images; {listed}: {', '.join(names)})"
    listing = list_images(spec)
    positions = [listing.index(name) for name in names]
    return split_validation(TargetData(full, few, desc), positions, validation_fraction or 0.0,
                            seed)


def _toyfaces(
    domain: str, size: int, shots: int, seed: int, files: Sequence[str] | None
) -> TargetData:
    if domain not in toyfaces.TARGET_DOMAINS:
        raise DataError(
            f"{TOYFACES_PREFIX}{domain} is not a ToyFaces target; use one of "
            + ", ".join(TOYFACES_PREFIX + d for d in toyfaces.TARGET_DOMAINS)
        )
    if files is not None:
        raise DataError("explicit shot files apply to image folders, not to ToyFaces domains")
    rng = toyfaces.FULL_SET[domain]
    try:
        shot_idx = toyfaces.few_shot_indices(domain, shots, seed)
    except ValueError as err:
        raise DataError(f"{TOYFACES_PREFIX}{domain}: {err}") from err
    full = toyfaces.render_tensor(domain, rng, size)
    few = toyfaces.render_tensor(domain, shot_idx, size)
    desc = (
        f"ToyFaces {domain} at {size}px (full set: indices {rng.start}..{rng.stop - 1}; "
        f"shots: {', '.join(str(i) for i in shot_idx.tolist())})"
    )
    return TargetData(full, few, desc, domain, shot_idx)
