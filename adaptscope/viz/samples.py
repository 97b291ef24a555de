"""Sample evolution: the same latent code rendered by every method at every evaluation.

This is the picture the paper opens with: one face drifting toward the target domain, faster or
slower depending on the method, and eventually collapsing onto one of the ten shots.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from adaptscope.track import rundir
from adaptscope.viz.panels import EXPERIMENT_COLUMNS, FigureSkipped, experiment_title
from adaptscope.viz.style import figure_style, method_label, method_palette, ordered_methods


def row_label(method: str) -> str:
    """A row's label, one setting a line: a sweep's variant label is wider than a sample row
    is tall (`DCL` / `patch_scheme=true,` / `d_term_minimized_by=both`)."""
    base, bracket, variant = method_label(method).partition(" [")
    if not bracket:
        return base
    return "\n".join([base, *(f"{part}," for part in variant.rstrip("]").split(", "))]).rstrip(",")

CELL_INCHES = 1.35


class DamagedFile(UserWarning):
    """A run's saved image array cannot be read: the figure is drawn without it."""


def _load(path: Path) -> np.ndarray | None:
    """A saved uint8 (n, H, W, 3) image array; None, with a `DamagedFile` warning naming the
    file, when it is damaged (never unpickled: a run folder is not trusted code)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        warnings.warn(f"{path} is not a readable .npy array ({err}); left out of the figure",
                      DamagedFile, stacklevel=3)
        return None
    if not (isinstance(array, np.ndarray) and array.ndim == 4 and array.shape[-1] == 3
            and array.dtype == np.uint8):
        found = (f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray)
                 else type(array).__name__)
        warnings.warn(f"{path} holds {found}, not uint8 images (n, H, W, 3); left out of the "
                      "figure", DamagedFile, stacklevel=3)
        return None
    return array


def _images(path: Path, indices: Sequence[int]) -> np.ndarray | None:
    """The requested images of a uint8 (n, H, W, 3) array, side by side; None if unusable."""
    array = _load(path) if path.is_file() else None
    if array is None or max(indices) >= array.shape[0]:
        return None
    return np.concatenate([np.asarray(array[i]) for i in indices], axis=1)


def _shots(run_dirs: Sequence[Path]) -> np.ndarray | None:
    """The first run's few-shot images as a uint8 (n, H, W, 3) array, if it saved them."""
    for run_dir in run_dirs:
        path = run_dir / rundir.SHOTS_NPY
        shots = _load(path) if path.is_file() else None
        if shots is not None and len(shots):
            return np.asarray(shots)
    return None


def _pick_columns(iterations: Sequence[int], max_columns: int) -> list[int]:
    """Evenly spaced evaluations, always keeping the first and the last."""
    its = sorted(set(iterations))
    if len(its) <= max_columns:
        return its
    picks = np.linspace(0, len(its) - 1, max_columns).round().astype(int)
    return [its[i] for i in sorted(set(picks))]


def _chosen_runs(df: pd.DataFrame, seed: int | None) -> dict[str, pd.DataFrame]:
    """One run per method: the requested seed, or the method's lowest seed."""
    chosen = {}
    for method in ordered_methods(df["method"].astype(str)):
        rows = df[df["method"] == method]
        wanted = int(rows["seed"].min()) if seed is None else seed
        rows = rows[rows["seed"] == wanted]
        if not rows.empty:
            chosen[method] = rows[rows["run_id"] == rows["run_id"].iloc[0]]
    return chosen


def _draw_cell(ax, image: np.ndarray | None) -> None:
    """One grid cell: the samples of one method at one iteration, or a note that none exist."""
    if image is None:
        ax.text(0.5, 0.5, "not saved", ha="center", va="center", fontsize=8, color="0.5",
                transform=ax.transAxes)
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_sample_evolution(
    df: pd.DataFrame,
    run_dirs: Mapping[str, str | Path] | None = None,
    *,
    latent_indices: Sequence[int] = (0,),
    seed: int | None = None,
    iterations: Sequence[int] | None = None,
    max_columns: int = 8,
) -> Figure:
    """Rows = methods, columns = evaluated iterations, for fixed latent indices; shots on top.

    `run_dirs` maps run_id to its directory; by default the mapping `load_trajectories` leaves
    in `df.attrs["run_dirs"]`. The table must hold a single experiment (source, target, shots).
    """
    experiments = df[list(EXPERIMENT_COLUMNS)].drop_duplicates()
    if len(experiments) != 1:
        raise ValueError(
            f"sample evolution shows one experiment at a time, got {len(experiments)}; "
            "filter the table by source, target and shots first"
        )
    if not latent_indices:
        raise ValueError("latent_indices must name at least one latent")
    run_dirs = run_dirs if run_dirs is not None else df.attrs.get("run_dirs", {})
    runs = _chosen_runs(df, seed)
    dirs = {
        m: Path(run_dirs[r["run_id"].iloc[0]])
        for m, r in runs.items()
        if r["run_id"].iloc[0] in run_dirs
    }
    if not dirs:
        raise FigureSkipped("sample evolution: the run directories of these runs are unknown")

    def sample_path(method: str, it: int) -> Path:
        return dirs[method] / rundir.sample_file(it, "npy")

    available = {
        m: [int(i) for i in runs[m]["iteration"] if sample_path(m, int(i)).is_file()] for m in dirs
    }
    # Iterations every method saved, where there are two or more: a method evaluated more often
    # (AdAM's extra grid) must not push the others' columns out as "not saved".
    shared = sorted(set.intersection(*(set(its) for its in available.values())))
    pool = shared if len(shared) > 1 else [i for its in available.values() for i in its]
    columns = list(iterations) if iterations is not None else _pick_columns(pool, max_columns)
    if not columns:
        raise FigureSkipped(
            f"sample evolution: no {rundir.SAMPLES_DIR}/iter_*.npy files in the run directories"
        )
    methods = [m for m in runs if m in dirs]
    shots = _shots([dirs[m] for m in methods])
    palette = method_palette(methods)
    width = CELL_INCHES * len(latent_indices)
    with figure_style():
        shot_height = 0.0 if shots is None else width * len(columns) / len(shots) + 0.5
        fig = Figure(
            figsize=(width * len(columns) + 1.3, CELL_INCHES * len(methods) + shot_height + 1.0),
            layout="constrained",
        )
        ratios = ([shot_height] if shots is not None else []) + [CELL_INCHES] * len(methods)
        grid = fig.add_gridspec(len(ratios), len(columns), height_ratios=ratios)
        first_row = 0
        if shots is not None:
            ax = fig.add_subplot(grid[0, :])
            ax.imshow(np.concatenate(list(shots), axis=1), interpolation="nearest")
            ax.set_title(f"the {len(shots)} training shots", fontsize=10)
            ax.axis("off")
            first_row = 1
        for r, method in enumerate(methods):
            for c, it in enumerate(columns):
                ax = fig.add_subplot(grid[first_row + r, c])
                _draw_cell(ax, _images(sample_path(method, it), latent_indices))
                if r == 0:
                    ax.set_title(f"it {it}", fontsize=10)
                if c == 0:
                    ax.set_ylabel(
                        row_label(method), fontsize=11 if " [" not in method else 6,
                        color=palette[method], fontweight="bold"
                    )
        seeds = sorted({int(runs[m]["seed"].iloc[0]) for m in methods})
        latents = ", ".join(str(i) for i in latent_indices)
        title = experiment_title(*experiments.iloc[0])
        fig.suptitle(
            f"Sample evolution — {title}\nlatent {latents}, seed {', '.join(map(str, seeds))}"
        )
    return fig
