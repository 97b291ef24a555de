"""Synthetic run directories shaped like the paper's curves, written through the real store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaptscope.track import rundir
from adaptscope.track.store import append_rows

# Intra-LPIPS at 0 / 1000 / 3000 iterations on Babies (the paper's Figure, read off its page).
LPIPS_POINTS = {
    "tgan": (0.638, 0.549, 0.472),
    "freezed": (0.638, 0.551, 0.464),
    "ewc": (0.638, 0.566, 0.475),
    "cdc": (0.638, 0.581, 0.537),
    "dcl": (0.638, 0.593, 0.546),
}
FINAL_FID = {"tgan": 104.8, "freezed": 100.0, "ewc": 87.4, "cdc": 74.4, "dcl": 52.6}
PT_HALF = {"tgan": 300, "freezed": 300, "ewc": 320, "cdc": 550, "dcl": 550}
PROTOCOL = {"fid_n_gen": 5000, "fid_backbone": "inception", "lpips_n": 1000}


def _image(colour: np.ndarray, size: int, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (radius * size) ** 2
    img = np.full((size, size, 3), 235, dtype=np.uint8)
    img[disc] = colour
    return img


def make_run(
    root: Path,
    method: str,
    seed: int,
    *,
    iterations: Sequence[int] = tuple(range(0, 3001, 500)),
    target: str = "babies",
    source: str = "ffhq",
    fid_backbone: str | None = "inception",
    lpips_backbone: str | None = "vgg",
    with_fid: bool = True,
    with_pt: bool = True,
    with_lpips: bool = True,
    with_gt: bool = False,
    samples: bool = True,
    size: int = 16,
    n_samples: int = 3,
) -> Path:
    """One run directory with a trajectory, sample arrays and shots."""
    rng = np.random.default_rng(seed * 97 + sum(map(ord, method + target)))
    run_id = f"{source}-{target}-{method}-s{seed}"
    run_dir = root / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    points = LPIPS_POINTS.get(method, (0.638, 0.56, 0.50))
    rows = []
    for it in iterations:
        lpips = float(np.interp(it, [0, 1000, 3000], points)) + rng.normal(0, 0.004)
        fid_end = FINAL_FID.get(method, 90.0)
        fid = fid_end + (220 - fid_end) * np.exp(-it / (2 * PT_HALF.get(method, 400)))
        pt = 1 / (1 + np.exp(-(it - PT_HALF.get(method, 400)) / 120))
        row = {
            "run_id": run_id,
            "method": method,
            "source": source,
            "target": target,
            "shots": 10,
            "seed": seed,
            "iteration": it,
            "images_seen": it * 4,
            "wall_time_s": it * 0.05,
            "fid": fid + rng.normal(0, 2) if with_fid else None,
            "fid_backbone": fid_backbone if with_fid else None,
            "fid_n_gen": 5000 if with_fid else None,
            "realism_pt": float(np.clip(pt + rng.normal(0, 0.01), 0, 1)) if with_pt else None,
            "intra_lpips": lpips if with_lpips else None,
            "intra_lpips_std": 0.02 if with_lpips else None,
            "lpips_backbone": lpips_backbone if with_lpips else None,
            "nearest_shot_lpips": lpips * 0.8 if with_lpips else None,
        }
        if with_gt:
            row["gt_coverage"] = 0.9 * lpips / 0.638
            row["gt_replication"] = 1 - lpips / 0.638
        rows.append(row)
    append_rows(run_dir, rows, config={"method": method, "seed": seed}, protocol=PROTOCOL)
    if samples:
        colours = np.random.default_rng(7).integers(0, 255, (10, 3))
        shots = np.stack([_image(c, size, 0.35) for c in colours])
        np.save(run_dir / rundir.SHOTS_NPY, shots)
        (run_dir / rundir.SAMPLES_DIR).mkdir(exist_ok=True)
        speed = 1.0 - (points[2] - 0.45) * 4  # methods that keep diversity drift more slowly
        for it in iterations:
            w = min(1.0, speed * it / 3000)
            batch = []
            for k in range(n_samples):
                colour = (1 - w) * np.array([120, 120, 120]) + w * colours[k % 10]
                batch.append(_image(colour.astype(np.uint8), size, 0.25 + 0.1 * w))
            np.save(run_dir / rundir.sample_file(it, "npy"), np.stack(batch))
    return run_dir


def make_runs(
    root: Path,
    methods: Sequence[str] = ("tgan", "freezed", "ewc", "cdc", "dcl"),
    seeds: Sequence[int] = (0, 1, 2),
    **kwargs,
) -> Path:
    """A directory of runs: every method with every seed."""
    for method in methods:
        for seed in seeds:
            make_run(root, method, seed, **kwargs)
    return root
