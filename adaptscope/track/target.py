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

from adaptscope.data.folder import few_shot_subset, load_images, read_shots_file
from adaptscope.embedded import TOYFACES_PREFIX, toyfaces
from adaptscope.errors import DataError


class TargetData(NamedTuple):
    """The tensors a run adapts on and evaluates against, with a readable provenance line."""

    full: torch.Tensor
    shots: torch.Tensor
    description: str
    domain: str | None = None  # the ToyFaces domain (known attributes); None for a folder
    shot_indices: np.ndarray | None = None  # the shots' ToyFaces indices


def load_target(
    spec: str,
    size: int,
    shots: int = 10,
    seed: int = 0,
    files: Sequence[str] | None = None,
    shots_file: str | Path | None = None,
) -> TargetData:
    """Resolve `spec` to (full set, shots, description).

    For ToyFaces the shots are drawn from the target's FULL_SET by `seed`; for a folder or zip
    they are `files` if given, or the names listed in `shots_file` (see `read_shots_file`),
    else a seeded draw from the sorted listing. In every case the shots are members of the full
    set, as in the paper's protocol.
    """
    if shots_file:
        if spec.startswith(TOYFACES_PREFIX):
            raise DataError(f"shots file {Path(shots_file)} applies to image folders, not to "
                            f"the ToyFaces domain {spec}; remove target.shots_file")
        if files is not None:
            raise DataError(f"shots file {Path(shots_file)} and explicit shot files both name "
                            "the shots; keep one of target.files and target.shots_file")
    if spec.startswith(TOYFACES_PREFIX):
        return _toyfaces(spec[len(TOYFACES_PREFIX) :], size, shots, seed, files)
    if shots_file:
        files = read_shots_file(shots_file, spec, shots)
    names = few_shot_subset(spec, shots, seed=seed, files=files)
    full = load_images(spec, size)
    few = load_images(spec, size, files=names)
    listed = f"shots listed in {Path(shots_file)}" if shots_file else "shots"
    desc = f"{Path(spec)} ({full.shape[0]} images; {listed}: {', '.join(names)})"
    return TargetData(full, few, desc)


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
