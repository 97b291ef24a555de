"""The trajectory table's contract: column names, dtypes and parquet metadata keys.

One row per run and evaluated iteration. Every writer and reader of trajectories goes through
these names, so a notebook, a plot and the tracker always agree on what a column means.

Schema history: version 2 added `evaluation` ("full" or "cheap"); a version-1 file holds full
evaluations only and is read as such.
"""

from __future__ import annotations

# Identity of the run (same value on every row of one run).
ID_COLUMNS: dict[str, str] = {
    "run_id": "string",
    "method": "string",
    "source": "string",
    "target": "string",
    "shots": "int64",
    "seed": "int64",
}

# Where in training the row was measured, and how: a "full" evaluation measures every metric of
# the protocol; a "cheap" one, at its own denser cadence, only the metrics that are cheap to
# compute (p_t and the nearest-shot LPIPS), leaving the others null.
PROGRESS_COLUMNS: dict[str, str] = {
    "iteration": "int64",
    "images_seen": "int64",
    "wall_time_s": "float64",
    "evaluation": "string",
}
FULL = "full"
CHEAP = "cheap"
EVALUATION_KINDS: tuple[str, ...] = (FULL, CHEAP)
CHEAP_METRICS: tuple[str, ...] = ("realism_pt", "nearest_shot_lpips")

# The protocol's metrics; null where a metric was not computed.
METRIC_COLUMNS: dict[str, str] = {
    "fid": "float64",
    "fid_backbone": "string",
    "fid_n_gen": "Int64",
    "realism_pt": "float64",
    "intra_lpips": "float64",
    "intra_lpips_std": "float64",
    "lpips_backbone": "string",
    "nearest_shot_lpips": "float64",
}

# Columns every trajectory has, in order. Extra metrics (for example the embedded world's
# ground-truth diversity columns `gt_coverage`, `gt_replication`) follow as float64 columns.
COLUMNS: dict[str, str] = {**ID_COLUMNS, **PROGRESS_COLUMNS, **METRIC_COLUMNS}

# Key-value metadata of every trajectory parquet file (values are UTF-8 strings).
META_CONFIG = "adaptscope.config"  # the run's resolved config, JSON
META_VERSION = "adaptscope.version"  # adaptscope version that wrote the file
META_PROTOCOL = "adaptscope.protocol"  # evaluation protocol, JSON (backbones, sample counts, ...)
META_SCHEMA = "adaptscope.schema"  # schema version of this table
SCHEMA_VERSION = "2"
READABLE_SCHEMA_VERSIONS: tuple[str, ...] = ("1", SCHEMA_VERSION)
