"""The trajectory table's contract: column names, dtypes and parquet metadata keys.

One row per run and evaluated iteration. Every writer and reader of trajectories goes through
these names, so a notebook, a plot and the tracker always agree on what a column means.

Schema history: version 2 added `evaluation` ("full" or "cheap"); a version-1 file holds full
evaluations only and is read as such. Version 3 added `protocol` and the metrics computed from the
FID features and the LPIPS distances (KID, precision/recall/density/coverage, memorisation);
older files read them as null. Version 4 added `stage`, the method's stage at the row (AdAM's
importance probing, MineGAN's miner-only start; "adapt" for methods of one stage). Version 5
added `stage_start`, the iteration where the row's stage began (`stage_aligned` counts a run's
iterations from its last stage's start with it). Version 6 added `variant`, the sweep variant of
the run (`ewc.lam=10`; null outside sweeps), and `fid_selection`, FID against a validation split
of the target set (null without one). Version 7 added `family`, the generator family ("gan" or
"diffusion"; older files read it as "gan", the only family they could hold), Gu et al.'s
memorisation (`gu_memorised_features`, `gu_memorised_lpips`) and CMMD (`cmmd`, `cmmd_unbiased`,
`cmmd_backbone`).
"""

from __future__ import annotations

# Identity of the run (same value on every row of one run).
ID_COLUMNS: dict[str, str] = {
    "run_id": "string",
    "family": "string",  # the generator family: "gan" or "diffusion"
    "method": "string",
    "source": "string",
    "target": "string",
    "shots": "int64",
    "seed": "int64",
}
# The sweep variant (the settings that make it, e.g. `ewc.lam=10`); null for a run outside a
# sweep, so unlike the identity columns above it may be null.
VARIANT_COLUMNS: dict[str, str] = {"variant": "string"}

# Where in training the row was measured, and how: a "full" evaluation measures every metric of
# the protocol; a "cheap" one, at its own denser cadence, only the metrics that are cheap to
# compute (p_t and the nearest-shot LPIPS), leaving the others null.
PROGRESS_COLUMNS: dict[str, str] = {
    "iteration": "int64",
    "images_seen": "int64",
    "wall_time_s": "float64",
    "evaluation": "string",
    "stage": "string",  # the method's stage (Method.stage); null for external checkpoints
    "stage_start": "Int64",  # the iteration where that stage began (Method.stage_start)
}
FULL = "full"
CHEAP = "cheap"
EVALUATION_KINDS: tuple[str, ...] = (FULL, CHEAP)
CHEAP_METRICS: tuple[str, ...] = ("realism_pt", "nearest_shot_lpips", "memorised_lpips",
                                  "gu_memorised_lpips")

# The protocol's metrics; null where a metric was not computed. `protocol` names the evaluation
# protocol (adaptscope.protocols) on every row, cheap ones included.
METRIC_COLUMNS: dict[str, str] = {
    "protocol": "string",
    "fid": "float64",
    "fid_backbone": "string",
    "fid_n_gen": "Int64",
    # FID against the held-out validation part of the target set (`target.validation_fraction`),
    # for choosing an iteration without looking at the reporting set; null without one.
    "fid_selection": "float64",
    "kid": "float64",  # unbiased MMD^2, mean over subsets, in the FID extractor's features
    "kid_std": "float64",
    "precision": "float64",  # Kynkaanniemi et al. 2019, k = 3
    "recall": "float64",
    "density": "float64",  # Naeem et al. 2020, k = 5
    "coverage": "float64",
    "memorised_features": "float64",  # fraction of samples replicating a shot, FID features
    "realism_pt": "float64",
    "intra_lpips": "float64",
    "intra_lpips_std": "float64",
    "lpips_backbone": "string",
    "nearest_shot_lpips": "float64",
    "memorised_lpips": "float64",  # the same fraction in LPIPS space
    # Gu et al.'s rule: the fraction of samples under 1/3 of the second-nearest shot's distance
    # from their nearest shot (FID features; LPIPS)
    "gu_memorised_features": "float64",
    "gu_memorised_lpips": "float64",
    # CMMD (CLIP embeddings, Gaussian kernel, x1000): biased as the reference, and unbiased;
    # null unless the protocol measures it (metrics.cmmd_backbone)
    "cmmd": "float64",
    "cmmd_unbiased": "float64",
    "cmmd_backbone": "string",
}

# Columns every trajectory has, in order. Extra metrics (for example the embedded world's
# ground-truth diversity columns `gt_coverage`, `gt_replication`) follow as float64 columns.
COLUMNS: dict[str, str] = {**ID_COLUMNS, **VARIANT_COLUMNS, **PROGRESS_COLUMNS,
                           **METRIC_COLUMNS}

# Key-value metadata of every trajectory parquet file (values are UTF-8 strings).
META_CONFIG = "adaptscope.config"  # the run's resolved config, JSON
META_VERSION = "adaptscope.version"  # adaptscope version that wrote the file
META_PROTOCOL = "adaptscope.protocol"  # evaluation protocol, JSON (backbones, sample counts, ...)
META_SCHEMA = "adaptscope.schema"  # schema version of this table
SCHEMA_VERSION = "7"
READABLE_SCHEMA_VERSIONS: tuple[str, ...] = ("1", "2", "3", "4", "5", "6", SCHEMA_VERSION)
# The version that added a column; a file of an earlier version is read with it null (and
# `evaluation` as "full").
ADDED_IN: dict[str, int] = {
    "evaluation": 2,
    **{c: 3 for c in ("protocol", "kid", "kid_std", "precision", "recall", "density",
                      "coverage", "memorised_features", "memorised_lpips")},
    "stage": 4,
    "stage_start": 5,
    "variant": 6,
    "fid_selection": 6,
    **{c: 7 for c in ("family", "gu_memorised_features", "gu_memorised_lpips", "cmmd",
                      "cmmd_unbiased", "cmmd_backbone")},
}
# What a column added later reads as in an older file, where that is known rather than null.
OLDER_FILES_READ: dict[str, str] = {"evaluation": FULL, "family": "gan"}


def columns_of_version(version: str) -> list[str]:
    """The columns every file of schema `version` has."""
    return [c for c in COLUMNS if ADDED_IN.get(c, 1) <= int(version)]
