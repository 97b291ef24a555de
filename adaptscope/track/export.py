"""Incremental exports of trajectories to TensorBoard and Weights & Biases.

The parquet trajectory stays the record: an export copies its rows into a viewer's format, and
can be made again whenever there are new rows. Each exported run keeps a small state file in the
destination, `.adaptscope-export/<run_id>.<backend>.json` (the last exported iteration, that row's
kind of evaluation and how many rows went out), so a later export sends only the rows recorded
since, and one destination can follow a study while it runs: `adaptscope export` again, or
`adaptscope run --log-to`, which exports after every recorded row (`live_exports`).

Every row goes out at its iteration as the step: each numeric metric of the schema as
`metrics/<column>`, the extra metrics (`gt_*`) likewise, the loop's `loss_*`, `grad_norm_*` and
`ada_p` as `train/<column>`, `images_seen` and `wall_time_s` as `progress/<column>`, and the
sample grid of a full evaluation as the image `samples`. A cheap row sends the values it has.

The state is written only once the rows it counts are on disk (TensorBoard: after a flush; W&B:
when the offline run is finished), so a process killed in between sends those rows again next
time rather than losing them (a viewer may then hold such a step twice, with the same values).
One process at a time exports a run into a destination: a lock beside the state refuses the
others. To export a run from scratch, delete the destination folder (its state with it).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptscope.config import read_toml
from adaptscope.errors import AdaptscopeError, ConfigError, ExportError
from adaptscope.files import atomic_write
from adaptscope.images import make_grid
from adaptscope.track import schema
from adaptscope.track.export_sinks import (
    BACKENDS,
    TENSORBOARD,
    Sink,
    TensorBoardSink,
    WandbSink,
    load_backend,
)
from adaptscope.track.rundir import CONFIG_FILE, RunDir, sample_file
from adaptscope.track.store import find_trajectory_files, load_trajectories, read_metadata

try:
    import fcntl
except ImportError:  # no flock (Windows): one exporter per destination is then on you
    fcntl = None  # type: ignore[assignment]

STATE_DIR = ".adaptscope-export"
# Event kinds of the loop after which `live_exports` looks for new rows.
_EXPORT_EVENTS = frozenset({"start", "eval", "cheap", "done"})
_METRICS = tuple(c for c, kind in schema.METRIC_COLUMNS.items() if kind != "string")
_PROGRESS = ("images_seen", "wall_time_s")
_TRAINING_PREFIXES = ("loss_", "grad_norm_")
_TRAINING = ("ada_p",)


class ExportWarning(UserWarning):
    """A live export (`adaptscope run --log-to`) that stopped; the run itself goes on."""


class ExportBusy(ExportError):
    """Another process is exporting this run into the same destination."""


def parse_backends(values: Iterable[str]) -> list[str]:
    """`--log-to` values, each a backend or a comma-separated list, as distinct backend names;
    an unknown name is a ConfigError."""
    chosen: list[str] = []
    for value in values:
        for name in (v.strip() for v in value.split(",")):
            if name not in BACKENDS:
                raise ConfigError(f"--log-to {value!r}: {name!r} is not an export; give "
                                  f"{' or '.join(BACKENDS)} (repeated or comma-separated)")
            if name not in chosen:
                chosen.append(name)
    return chosen


def check_backends(backends: Iterable[str]) -> None:
    """Raise the install command of the first backend whose package is missing."""
    for backend in backends:
        load_backend(backend)


def scalar_tags(columns: Iterable[str]) -> dict[str, str]:
    """The tag each exported column of a trajectory goes out as (see the module docstring)."""
    tags: dict[str, str] = {}
    for column in columns:
        if column in _METRICS:
            tags[column] = f"metrics/{column}"
        elif column in _PROGRESS:
            tags[column] = f"progress/{column}"
        elif column not in schema.COLUMNS:
            training = column.startswith(_TRAINING_PREFIXES) or column in _TRAINING
            tags[column] = f"{'train' if training else 'metrics'}/{column}"
    return tags


def row_scalars(row: Mapping[str, Any], tags: Mapping[str, str]) -> dict[str, float]:
    """The row's values that are present, by tag (a null metric is not sent)."""
    values = {}
    for column, tag in tags.items():
        value = row.get(column)
        if value is None or value is pd.NA:
            continue
        value = float(value)
        if not math.isnan(value):
            values[tag] = value
    return values


def sample_grid(run_dir: Path, iteration: int) -> tuple[np.ndarray | None, str | None]:
    """The sample grid saved at `iteration` (H, W, 3 uint8, tiled as the tracker's PNG), or
    None; with a warning when the file is there but unusable. The `.npy` array is read without
    unpickling (a run folder is not trusted code); a folder with only the PNG gives the PNG."""
    npy, png = run_dir / sample_file(iteration, "npy"), run_dir / sample_file(iteration, "png")
    if npy.is_file():
        try:
            array = np.load(npy, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            return None, f"{npy} is not a readable .npy array ({err}); its image is left out"
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
            return None, (f"{npy} holds {array.dtype} {array.shape}, not uint8 images "
                          "(n, H, W, 3); its image is left out")
        return make_grid(array), None
    if png.is_file():
        from PIL import Image

        try:
            with Image.open(png) as image:
                return np.asarray(image.convert("RGB")), None
        except OSError as err:
            return None, f"{png} is not a readable PNG ({err}); its image is left out"
    return None, None


@dataclass(frozen=True)
class ExportState:
    """How far a run has been exported into one destination."""

    run_id: str
    backend: str
    iteration: int  # the last exported row's
    evaluation: str  # that row's kind ("full" or "cheap")
    rows: int  # rows exported so far


def state_path(root: Path, run_id: str, backend: str) -> Path:
    return Path(root) / STATE_DIR / f"{run_id}.{backend}.json"


def read_state(path: Path) -> ExportState | None:
    """The state recorded at `path`, None where nothing was exported yet."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ExportState(run_id=str(data["run_id"]), backend=str(data["backend"]),
                           iteration=int(data["iteration"]), evaluation=str(data["evaluation"]),
                           rows=int(data["rows"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ExportError(f"{path} is not an export state adaptscope wrote ({err}); delete it "
                          "and the run's exported data there to export the run again") from err


def write_state(path: Path, state: ExportState) -> None:
    text = (json.dumps(asdict(state), indent=2) + "\n").encode("utf-8")
    atomic_write(path, lambda handle: handle.write(text))


def _take_lock(path: Path, run_id: str) -> int | None:
    """Hold `path` (an flock) while exporting `run_id`; ExportBusy when another process (or
    another exporter of this one) holds it. The OS drops it when its holder dies."""
    if fcntl is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ExportBusy(f"{path.parent.parent}: another process is exporting {run_id} "
                         "there") from None
    return fd


def run_config(run_dir: Path, trajectory: Path) -> dict[str, Any]:
    """The run's resolved config: its config.toml, or the one its trajectory records."""
    if (run_dir / CONFIG_FILE).is_file():
        return read_toml(run_dir / CONFIG_FILE)
    config = read_metadata(trajectory).get("config")
    return config if isinstance(config, dict) else {}


class RunExporter:
    """One run's rows into one backend's destination `root`, sent incrementally.

    `update` sends the rows recorded since the last export; `close` finishes the sink and
    records how far it got. Holds the destination's lock for this run from creation to close.
    """

    def __init__(self, backend: str, root: Path, trajectory: Path, run_id: str) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"{backend!r} is not an export; give one of {', '.join(BACKENDS)}")
        self.backend, self.root, self.run_id = backend, Path(root), run_id
        self.trajectory = Path(trajectory)
        self.state_file = state_path(self.root, run_id, backend)
        self.warnings: list[str] = []
        self._lock = _take_lock(self.state_file.with_suffix(".lock"), run_id)
        try:
            self._saved = read_state(self.state_file)
        except BaseException:
            self._release()
            raise
        self._last = self._saved
        self._sink: Sink | None = None
        self._skipped_earlier = False

    def __enter__(self) -> RunExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, frame: pd.DataFrame | None = None) -> int:
        """Send the rows recorded since the last export (`frame`: the trajectory, already
        loaded); return how many went out."""
        if frame is None:
            if not self.trajectory.is_file():
                return 0
            frame = load_trajectories(self.trajectory)
        rows = self._new_rows(frame)
        if rows.empty:
            return 0
        sink = self._sink or self._open()
        tags = scalar_tags(frame.columns)
        for row in rows.to_dict("records"):
            step = int(row["iteration"])
            image, problem = sample_grid(self.trajectory.parent, step)
            if problem:
                self.warnings.append(problem)
            sink.write(step, row_scalars(row, tags), image)
        last = rows.iloc[-1]
        done = (self._last.rows if self._last else 0) + len(rows)
        self._last = ExportState(self.run_id, self.backend, int(last["iteration"]),
                                 str(last["evaluation"]), done)
        if sink.flush():
            self._save()
        return len(rows)

    def close(self) -> None:
        """Finish the sink (an offline W&B run is then whole) and record the state."""
        try:
            if self._sink is not None:
                sink, self._sink = self._sink, None
                sink.close()
                self._save()
        finally:
            self._release()

    def _new_rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows after the last exported one, the trajectory checked to be the one exported."""
        ids = set(frame["run_id"].astype(str))
        if ids != {self.run_id}:
            raise ExportError(f"{self.trajectory} holds run(s) {sorted(ids)}, not "
                              f"{self.run_id}")
        frame = frame.sort_values("iteration", kind="stable")
        last = self._last
        if last is None:
            return frame
        iterations = frame["iteration"]
        at = frame[iterations == last.iteration]
        earlier = int((iterations <= last.iteration).sum())
        if at.empty or str(at["evaluation"].iloc[0]) != last.evaluation or earlier < last.rows:
            raise ExportError(
                f"{self.state_file}: {self.run_id} was exported up to its {last.evaluation} row "
                f"at iteration {last.iteration} ({last.rows} row(s)), which {self.trajectory} "
                "does not match: it is another trajectory of that run; export it into another "
                "folder, or delete that state file and the run's exported data to export again")
        if earlier > last.rows and not self._skipped_earlier:
            self._skipped_earlier = True
            self.warnings.append(
                f"{self.run_id}: {earlier - last.rows} row(s) recorded below iteration "
                f"{last.iteration} after it was exported are left out (steps go out in order); "
                "export into a new folder to include them")
        return frame[iterations > last.iteration]

    def _open(self) -> Sink:
        if self.backend == TENSORBOARD:
            self._sink = TensorBoardSink(self.root / self.run_id)
        else:
            run_dir = self.trajectory.parent
            config = run_config(run_dir, self.trajectory)
            group = config.get("experiment")
            self._sink = WandbSink(self.root, self.run_id, config,
                                   group if isinstance(group, str) else None)
        return self._sink

    def _save(self) -> None:
        if self._last is not None and self._last != self._saved:
            write_state(self.state_file, self._last)
            self._saved = self._last

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None


@dataclass
class RunExport:
    """What one export call did for one run and backend."""

    run_id: str
    backend: str
    destination: Path
    rows: int = 0
    skipped: str = ""  # why nothing was exported (another process exporting it)


@dataclass
class ExportReport:
    exports: list[RunExport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def export_runs(paths: Sequence[str | os.PathLike] | str | os.PathLike,
                destinations: Mapping[str, str | os.PathLike | None]) -> ExportReport:
    """Export every trajectory under `paths` (run folders, folders of runs, parquet files) into
    each backend's destination folder (`{"tensorboard": DIR, "wandb": DIR}`; None skips one),
    sending only the rows not exported there before."""
    chosen = {b: Path(d) for b, d in destinations.items() if d is not None}
    if not chosen:
        raise ConfigError("nothing to export to: give --tensorboard DIR, --wandb DIR or both")
    check_backends(chosen)
    runs: dict[str, tuple[Path, pd.DataFrame]] = {}
    for trajectory in find_trajectory_files(paths):
        frame = load_trajectories(trajectory)
        run_id = str(frame["run_id"].iloc[0])
        if run_id in runs:
            raise ExportError(f"run {run_id!r} is recorded in both {runs[run_id][0]} and "
                              f"{trajectory}; export one copy of each run")
        runs[run_id] = (trajectory, frame)
    report = ExportReport()
    for backend, root in chosen.items():
        for run_id, (trajectory, frame) in runs.items():
            done = RunExport(run_id, backend, root)
            try:
                with RunExporter(backend, root, trajectory, run_id) as exporter:
                    done.rows = exporter.update(frame)
                report.warnings += exporter.warnings
            except ExportBusy as err:
                done.skipped = str(err)
                report.warnings.append(f"{err}: skipped")
            report.exports.append(done)
    return report


@contextmanager
def live_exports(folder: RunDir, run_id: str) -> Iterator[Callable[[dict[str, Any]], None]]:
    """An event handler for the loop that exports the run's new rows after each one is
    recorded, into `<out>/<backend>` beside the run folder, for each backend its
    `log_to.json` names; a no-op when it names none.

    An export that fails stops with an ExportWarning and the run goes on: the trajectory is the
    record, and `adaptscope export` (or the next `--resume`) sends what is missing.
    """
    exporters: list[RunExporter] = []

    def stop(exporter: RunExporter | None, backend: str, err: BaseException) -> None:
        warnings.warn(f"{run_id}: exporting to {backend} stopped ({type(err).__name__}: {err}); "
                      "the run goes on, and `adaptscope export` sends the rows it misses",
                      ExportWarning, stacklevel=3)
        if exporter is not None:
            exporters.remove(exporter)
            try:
                exporter.close()
            except Exception:  # already stopping: the first error was shown
                pass

    for backend in folder.read_log_to():
        try:
            exporters.append(RunExporter(backend, folder.path.parent / backend,
                                         folder.trajectory, run_id))
        except (AdaptscopeError, OSError) as err:
            stop(None, backend, err)

    def on_event(event: dict[str, Any]) -> None:
        if event.get("kind") not in _EXPORT_EVENTS:
            return
        for exporter in list(exporters):
            try:
                exporter.update()
                for line in exporter.warnings:
                    warnings.warn(line, ExportWarning, stacklevel=2)
                exporter.warnings.clear()
            except Exception as err:  # any failure of a viewer's writer
                stop(exporter, exporter.backend, err)

    try:
        yield on_event
    finally:
        for exporter in list(exporters):
            try:
                exporter.close()
            except Exception as err:  # a failed finish stops only the export
                stop(None, exporter.backend, err)
