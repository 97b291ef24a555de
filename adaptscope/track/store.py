"""The parquet trajectory store: atomic appends by the tracker, typed loading for everyone else.

A trajectory file is rewritten whole on every append (read, concatenate, write to a temporary
file beside it, fsync, rename), so a process killed at any instant leaves either the previous
file or the new one on disk, never a torn one. Tables are tiny (one row per evaluation), so the
rewrite costs nothing next to an evaluation. Before each replace, the version being replaced is
kept beside it as `trajectory.parquet.prev` (a hard link, or a copy), so a table damaged later
(a disk fault, a bad copy) still has its previous version to go back to.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from adaptscope.errors import ConfigError, TrajectoryError
from adaptscope.files import atomic_write, stale_temporaries
from adaptscope.spec import ScheduleSpec
from adaptscope.track import schema
from adaptscope.track.rundir import TRAJECTORY_FILE

PathLike = str | os.PathLike

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int64": pa.int64(),
    "Int64": pa.int64(),
    "float64": pa.float64(),
}
# Columns that every row must carry a value for (non-nullable in the contract).
REQUIRED_VALUES: tuple[str, ...] = (*schema.ID_COLUMNS, "iteration", "images_seen", "evaluation")
PREVIOUS_SUFFIX = ".prev"  # trajectory.parquet.prev: the version before the latest append


def previous_version(path: Path) -> Path:
    """Where the version of trajectory `path` before its latest append is kept."""
    return path.with_name(path.name + PREVIOUS_SUFFIX)


# --------------------------------------------------------------------------------------------
# Schema helpers


def _arrow_schema(extra: Sequence[str], metadata: Mapping[str, str] | None = None) -> pa.Schema:
    fields = [pa.field(name, _ARROW_TYPES[dtype]) for name, dtype in schema.COLUMNS.items()]
    fields += [pa.field(name, pa.float64()) for name in extra]
    meta = {k.encode(): v.encode() for k, v in (metadata or {}).items()}
    return pa.schema(fields, metadata=meta or None)


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    is_real = isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
    return is_real and math.isnan(value)


def _coerce(name: str, dtype: str, value: Any, where: str) -> Any:
    """Return `value` as the Python type stored for `dtype`, or raise naming the column."""
    if _is_missing(value):
        if name in REQUIRED_VALUES:
            raise TrajectoryError(f"{where}: column {name!r} must have a value, got {value!r}")
        return None
    if dtype == "string":
        if not isinstance(value, str):
            raise TrajectoryError(f"{where}: column {name!r} must be a string, got {value!r}")
        return value
    if isinstance(value, bool):
        raise TrajectoryError(f"{where}: column {name!r} must be numeric, got a bool {value!r}")
    if dtype in ("int64", "Int64"):
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
        raise TrajectoryError(f"{where}: column {name!r} must be an integer, got {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    raise TrajectoryError(f"{where}: column {name!r} must be a number, got {value!r}")


def _normalise_rows(
    rows: Sequence[Mapping[str, Any]], run_dir: Path
) -> tuple[list[dict], list[str]]:
    """Check and convert rows to schema types; return them with their extra column names.

    A row that does not say which kind of evaluation it is counts as a full one, the only kind
    there was before schema version 2; one that names no family is a GAN's (schema 7).
    """
    extra: list[str] = []
    out: list[dict] = []
    for i, row in enumerate(rows):
        where = f"{run_dir}: row {i}"
        if not isinstance(row, Mapping):
            raise TrajectoryError(f"{where}: expected a dict, got {type(row).__name__}")
        # Columns a row may leave out: their values from before they existed.
        row = {**{k: v for k, v in schema.OLDER_FILES_READ.items() if k not in row}, **row}
        missing = [c for c in REQUIRED_VALUES if c not in row]
        if missing:
            raise TrajectoryError(f"{where}: missing required column(s) {missing}")
        clean = {}
        for name, value in row.items():
            if not isinstance(name, str) or not name:
                raise TrajectoryError(f"{where}: column names must be non-empty strings")
            dtype = schema.COLUMNS.get(name, "float64")
            clean[name] = _coerce(name, dtype, value, where)
            if name not in schema.COLUMNS and name not in extra:
                extra.append(name)
        if clean["evaluation"] not in schema.EVALUATION_KINDS:
            raise TrajectoryError(f"{where}: column 'evaluation' must be one of "
                                  f"{list(schema.EVALUATION_KINDS)}, got {clean['evaluation']!r}")
        out.append(clean)
    return out, extra


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


# How the schedule was recorded before its rule: every evaluation point, in the protocol.
_POINTS = ("evaluation_iterations", "cheap_evaluation_iterations")


def _schedule_rule(protocol: Mapping[str, Any], config: Any) -> dict[str, Any]:
    """`protocol` with the schedule's points replaced by its rule (`ScheduleSpec.rule`), when
    they are the points of the schedule in `config`; the rule stays a few bytes however long
    the run. Points that no schedule of `config` gives are kept, so they compare unequal."""
    if not any(key in protocol for key in _POINTS):
        return dict(protocol)
    cheap = _POINTS[1] in protocol
    try:
        schedule = ScheduleSpec(**config["schedule"])
        points = (schedule.evaluation_points(), schedule.cheap_points() if cheap else [])
    except (KeyError, TypeError, ConfigError):
        return dict(protocol)
    if (protocol.get(_POINTS[0]), protocol.get(_POINTS[1], [])) != points:
        return dict(protocol)
    rest = {k: v for k, v in protocol.items() if k not in _POINTS}
    return {**rest, "schedule": schedule.rule(cheap=cheap)}


def _recorded_protocol(meta: Mapping[str, str]) -> str | None:
    """A table's protocol as it is written today (an older table lists the schedule's points)."""
    text = meta.get(schema.META_PROTOCOL)
    try:
        protocol = json.loads(text or "null")
        config = json.loads(meta.get(schema.META_CONFIG) or "null")
    except json.JSONDecodeError:
        return text
    if not isinstance(protocol, dict):
        return text
    return _canonical_json(_schedule_rule(protocol, config))


def _metadata(config: Mapping[str, Any], protocol: Mapping[str, Any]) -> dict[str, str]:
    from adaptscope.version import __version__

    return {
        schema.META_CONFIG: _canonical_json(config),
        schema.META_VERSION: __version__,
        schema.META_PROTOCOL: _canonical_json(protocol),
        schema.META_SCHEMA: schema.SCHEMA_VERSION,
    }


def _decoded_metadata(table_schema: pa.Schema) -> dict[str, str]:
    raw = table_schema.metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items()}


def _validate_file_schema(path: Path, table_schema: pa.Schema) -> list[str]:
    """Refuse files that are not adaptscope trajectories (or of a schema version this one cannot
    read); return their extra column names."""
    meta = _decoded_metadata(table_schema)
    if schema.META_SCHEMA not in meta:
        raise TrajectoryError(
            f"{path}: not an adaptscope trajectory (no {schema.META_SCHEMA!r} key in the parquet "
            "metadata); trajectories are written by adaptscope's tracker"
        )
    version = meta[schema.META_SCHEMA]
    if version not in schema.READABLE_SCHEMA_VERSIONS:
        raise TrajectoryError(
            f"{path}: trajectory schema version {version!r}, but this adaptscope reads versions "
            f"{', '.join(repr(v) for v in schema.READABLE_SCHEMA_VERSIONS)}"
        )
    names = table_schema.names
    missing = [c for c in schema.columns_of_version(version) if c not in names]
    if missing:
        raise TrajectoryError(f"{path}: trajectory lacks required column(s) {missing}")
    return [n for n in names if n not in schema.COLUMNS]


def _read_whole_file(path: Path) -> pa.Table:
    """One consistent version of a trajectory, even while the tracker is replacing it.

    The bytes are read through a single open handle, which keeps pointing at one version of the
    file across a rename. (Handing pyarrow the path lets it take the size from one version and
    the bytes from the next, which fails with "Page was smaller than expected".)
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise TrajectoryError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        return pq.read_table(pa.BufferReader(data))
    except (OSError, pa.ArrowException) as exc:
        prev = previous_version(path)
        fix = (f"; {prev.name} beside it holds the previous version (without the latest "
               f"evaluation): rename it to {path.name} and run `adaptscope run --resume` to "
               "record the rest again" if prev.is_file() else "")
        raise TrajectoryError(f"{path} is unreadable: damaged or not a whole parquet table "
                              f"({exc}){fix}") from exc


def _read_table(path: Path) -> tuple[pa.Table, list[str], dict[str, str]]:
    """The typed table of a trajectory, its extra column names and its decoded metadata."""
    table = _read_whole_file(path)
    meta = _decoded_metadata(table.schema)
    extra = _validate_file_schema(path, table.schema)
    for name in schema.COLUMNS:  # columns added after the file's schema version
        if name not in table.schema.names:
            value = schema.OLDER_FILES_READ.get(name)  # schema 1: all full; before 7: all GANs
            table = table.append_column(
                name, pa.array([value] * table.num_rows, _ARROW_TYPES[schema.COLUMNS[name]]))
    try:
        table = table.select([*schema.COLUMNS, *extra]).cast(_arrow_schema(extra, None))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise TrajectoryError(f"{path}: columns do not have the schema's types ({exc})") from exc
    return table, extra, meta


# --------------------------------------------------------------------------------------------
# Writing


def _same_row(a: Mapping[str, Any], b: Mapping[str, Any], columns: Iterable[str]) -> bool:
    return all(a.get(c) == b.get(c) for c in columns)


def _remove_stale_temporaries(run_dir: Path) -> None:
    # Left behind only by a writer killed mid-write; the tracker is the sole writer of a run.
    for stale in stale_temporaries(run_dir, TRAJECTORY_FILE):
        stale.unlink(missing_ok=True)


def _keep_previous(target: Path) -> None:
    """Keep the current `target` as its `.prev` before it is replaced.

    A hard link costs nothing and never leaves a moment without a readable trajectory (the
    trajectory itself is only ever replaced by rename, so the link keeps the old version); where
    links are not supported, an atomic copy.
    """
    prev = previous_version(target)
    prev.unlink(missing_ok=True)
    try:
        os.link(target, prev)
    except OSError:
        atomic_write(prev, lambda handle: _copy_into(target, handle))


def _copy_into(source: Path, handle) -> None:
    with open(source, "rb") as fh:
        shutil.copyfileobj(fh, handle)


def _write_atomically(table: pa.Table, target: Path) -> None:
    atomic_write(target, lambda handle: pq.write_table(table, handle))


def append_rows(
    run_dir: PathLike,
    rows: list[dict],
    *,
    config: dict,
    protocol: dict,
) -> None:
    """Append evaluation rows to `run_dir/trajectory.parquet`, atomically.

    A row for an iteration already in the file is skipped when identical and refused otherwise,
    so a resumed run cannot record an iteration twice. Changing the protocol of an existing
    trajectory is refused (its numbers would no longer be comparable); the config stored is the
    latest one given.
    """
    run_dir = Path(run_dir)
    if not rows:
        return
    if not run_dir.is_dir():
        raise TrajectoryError(f"{run_dir}: run directory does not exist")
    target = run_dir / TRAJECTORY_FILE
    new_rows, new_extra = _normalise_rows(rows, run_dir)
    metadata = _metadata(config, protocol)
    _remove_stale_temporaries(run_dir)

    old_rows: list[dict] = []
    extra: list[str] = []
    if target.exists():
        old_table, extra, old_meta = _read_table(target)
        if _recorded_protocol(old_meta) != metadata[schema.META_PROTOCOL]:
            raise TrajectoryError(
                f"{target}: the evaluation protocol differs from the one already recorded "
                f"({old_meta.get(schema.META_PROTOCOL)} vs {metadata[schema.META_PROTOCOL]}); "
                "start a new run directory"
            )
        old_rows = old_table.to_pylist()
    extra += [c for c in new_extra if c not in extra]
    columns = [*schema.COLUMNS, *extra]

    run_ids = {r["run_id"] for r in old_rows} | {r["run_id"] for r in new_rows}
    if len(run_ids) > 1:
        raise TrajectoryError(f"{target}: one run directory holds one run, got {sorted(run_ids)}")

    by_iteration = {r["iteration"]: r for r in old_rows}
    added: list[dict] = []
    for row in new_rows:
        seen = by_iteration.get(row["iteration"])
        if seen is not None:
            if _same_row(seen, row, columns):
                continue
            raise TrajectoryError(
                f"{target}: iteration {row['iteration']} is already recorded with different "
                "values; use recorded_iterations() to skip evaluated iterations on resume"
            )
        by_iteration[row["iteration"]] = row
        added.append(row)
    if not added and target.exists():
        return

    all_rows = sorted(by_iteration.values(), key=lambda r: r["iteration"])
    arrow_schema = _arrow_schema(extra, metadata)
    table = pa.Table.from_pylist(
        [{c: r.get(c) for c in columns} for r in all_rows], schema=arrow_schema
    )
    try:
        if target.exists():
            _keep_previous(target)
        _write_atomically(table, target)
    except OSError as err:  # a full disk, a quota, a lost mount: the old table is untouched
        kept = (f"the {len(old_rows)} row(s) recorded before are intact in it"
                if old_rows else "nothing was recorded yet")
        raise TrajectoryError(
            f"{target}: cannot write the trajectory ({err.strerror or err}); {kept}. Make room "
            "(or fix the folder) and continue: `adaptscope run --resume` for a run, the same "
            "`adaptscope track` command for tracked checkpoints") from err


def recorded_iterations(run_dir: PathLike) -> set[int]:
    """Iterations already in `run_dir`'s trajectory (empty when there is none yet)."""
    target = Path(run_dir) / TRAJECTORY_FILE
    if not target.exists():
        return set()
    table, _, _ = _read_table(target)
    return {int(i) for i in table.column("iteration").to_pylist()}


# --------------------------------------------------------------------------------------------
# Reading


def _as_path_list(path_or_paths: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(path_or_paths, (str, os.PathLike)):
        return [Path(path_or_paths)]
    return [Path(p) for p in path_or_paths]


def find_trajectory_files(path_or_paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """Resolve run directories, directories of runs and parquet files to trajectory files."""
    paths = _as_path_list(path_or_paths)
    if not paths:
        raise TrajectoryError("no paths given to look for trajectories in")
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            hits = [path]
        elif path.is_dir():
            direct = path / TRAJECTORY_FILE
            hits = [direct] if direct.is_file() else sorted(path.rglob(TRAJECTORY_FILE))
        else:
            raise TrajectoryError(f"{path}: no such file or directory")
        if not hits:
            raise TrajectoryError(
                f"{path}: no {TRAJECTORY_FILE} found in this directory or below it"
            )
        found += hits
    unique: dict[Path, Path] = {}
    for hit in found:
        unique.setdefault(hit.resolve(), hit)
    return list(unique.values())


def _to_frame(table: pa.Table, extra: list[str]) -> pd.DataFrame:
    frame = table.to_pandas()
    dtypes = {**schema.COLUMNS, **{c: "float64" for c in extra}}
    return frame.astype(dtypes)


def load_trajectories(path_or_paths: PathLike | Iterable[PathLike],
                      evaluation: str | None = None) -> pd.DataFrame:
    """Load trajectories into one typed DataFrame, sorted by run_id and iteration.

    Accepts a run directory, a directory of runs (searched recursively), a trajectory parquet
    file, or a list of these. `df.attrs["run_dirs"]` maps each run_id to its directory, so that
    figures can find the run's sample images.

    `evaluation="full"` keeps only the full evaluations (every metric measured), dropping the
    dense p_t / nearest-shot rows of `schedule.cheap_every`; `"cheap"` keeps only those; None
    (the default) keeps every row, as `df[df["evaluation"] == "full"]` would filter afterwards.
    """
    if evaluation is not None and evaluation not in schema.EVALUATION_KINDS:
        raise ValueError(f"evaluation must be one of {list(schema.EVALUATION_KINDS)} or None, "
                         f"got {evaluation!r}")
    frames: list[pd.DataFrame] = []
    run_dirs: dict[str, str] = {}
    for path in find_trajectory_files(path_or_paths):
        table, extra, _ = _read_table(path)
        frame = _to_frame(table, extra)
        for run_id in frame["run_id"].unique():
            if run_id in run_dirs:
                raise TrajectoryError(
                    f"{path}: run {run_id!r} is also recorded in {run_dirs[run_id]}; "
                    "load one copy of each run"
                )
            run_dirs[str(run_id)] = str(path.parent)
        frames.append(frame)
    extras = [c for f in frames for c in f.columns if c not in schema.COLUMNS]
    order = [*schema.COLUMNS, *dict.fromkeys(extras)]
    frames = [f.reindex(columns=order) for f in frames]
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    df = df.astype({**schema.COLUMNS, **{c: "float64" for c in order[len(schema.COLUMNS) :]}})
    df = df.sort_values(["run_id", "iteration"], kind="stable", ignore_index=True)
    if evaluation is not None:
        df = df[df["evaluation"] == evaluation].reset_index(drop=True)
    df.attrs["run_dirs"] = run_dirs
    return df


def read_metadata(path: PathLike) -> dict[str, Any]:
    """Config, protocol, adaptscope version and schema version of one trajectory.

    `path` is a run directory or a trajectory parquet file.
    """
    path = Path(path)
    target = path / TRAJECTORY_FILE if path.is_dir() else path
    if not target.is_file():
        raise TrajectoryError(f"{path}: no {TRAJECTORY_FILE} here")
    _, _, meta = _read_table(target)

    def parsed(key: str) -> Any:
        try:
            return json.loads(meta.get(key, "null"))
        except json.JSONDecodeError as exc:
            raise TrajectoryError(f"{target}: metadata {key!r} is not valid JSON") from exc

    return {
        "config": parsed(schema.META_CONFIG),
        "protocol": parsed(schema.META_PROTOCOL),
        "version": meta.get(schema.META_VERSION),
        "schema": meta.get(schema.META_SCHEMA),
    }
