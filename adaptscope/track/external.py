"""Trajectories of runs trained elsewhere: the tracker applied to a series of saved checkpoints.

A method trained with its authors' own code (CDC's, for example, saves `000500.pt`, `001000.pt`,
...) is measured under exactly the protocol of adaptscope's runs: the same evaluator, fixed
latents per seed, sample grids and parquet rows. Iterations come from the checkpoint file names.
Running it again on the same output evaluates only the checkpoints not yet recorded, so it can
follow a training that is still going.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from adaptscope.errors import CheckpointError
from adaptscope.models import load_checkpoint
from adaptscope.spec import RunSpec, source_checkpoint_path
from adaptscope.track.rundir import RunDir
from adaptscope.track.store import recorded_iterations
from adaptscope.track.target import load_target
from adaptscope.track.tracker import Tracker

CHECKPOINT_SUFFIXES = (".pt", ".pth")
_DIGITS = re.compile(r"\d+")


def checkpoint_iteration(path: Path) -> int:
    """The iteration a checkpoint was saved at: the last number in its file name."""
    numbers = _DIGITS.findall(path.stem)
    if not numbers:
        raise CheckpointError(
            f"{path}: no iteration number in the file name; name checkpoints like 000500.pt "
            "or iter_500.pt")
    return int(numbers[-1])


def find_checkpoints(paths: Iterable[str | Path]) -> list[tuple[int, Path]]:
    """(iteration, file) of every checkpoint given or inside the folders given, by iteration."""
    found: dict[int, Path] = {}
    for given in map(Path, paths):
        if given.is_dir():
            files = sorted(p for p in given.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
            if not files:
                raise CheckpointError(f"{given}: no {' or '.join(CHECKPOINT_SUFFIXES)} files here")
        elif given.is_file():
            files = [given]
        else:
            raise CheckpointError(f"{given}: no such file or folder")
        for path in files:
            iteration = checkpoint_iteration(path)
            if iteration in found and found[iteration] != path:
                raise CheckpointError(f"{path} and {found[iteration]} both claim iteration "
                                      f"{iteration}; give one of them")
            found[iteration] = path
    return sorted(found.items())


def track_checkpoints(
    spec: RunSpec,
    checkpoints: list[tuple[int, Path]],
    run_dir: str | Path,
    include_source: bool = True,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Evaluate each checkpoint's `g_ema` as the row of its iteration in `run_dir`'s trajectory.

    With `include_source`, the experiment's source checkpoint is iteration 0 (unless a given
    checkpoint already is). `images_seen` assumes the experiment's batch size; the wall time of
    a run trained elsewhere is unknown and left empty.
    """
    folder = RunDir(Path(run_dir))
    emit = on_event or (lambda event: None)
    todo = dict(checkpoints)
    if include_source and 0 not in todo:
        todo[0] = source_checkpoint_path(spec.source)
    if not todo:
        raise CheckpointError("no checkpoints to evaluate")
    with folder.lock():  # one writer per run folder, taken before anything in it is written
        _track(spec, todo, folder, emit)
    return folder.path


def _track(spec: RunSpec, todo: dict[int, Path], folder: RunDir,
           emit: Callable[[dict[str, Any]], None]) -> None:
    folder.write_spec(spec)
    torch.set_num_threads(spec.threads)
    device = torch.device(spec.device)
    pending = sorted(i for i in todo if i not in recorded_iterations(folder.path))
    done = len(todo) - len(pending)
    emit({"kind": "start", "run_id": spec.run_id, "done": done, "total": len(todo)})
    tracker, size = None, None
    for iteration in pending:
        g_ema = load_checkpoint(todo[iteration]).g_ema.to(device).eval()
        if tracker is None:
            size = g_ema.size
            target = load_target(spec.target.data, size, spec.target.shots,
                                 spec.target.shots_seed, spec.target.files,
                                 spec.target.shots_file, spec.target.validation_fraction)
            tracker = Tracker(spec, folder, target, cheap=False)
        elif g_ema.size != size:
            raise CheckpointError(f"{todo[iteration]}: a {g_ema.size} px generator among "
                                  f"{size} px ones")
        row = tracker.record(iteration, iteration * spec.train.batch, math.nan, g_ema)
        done += 1
        emit({"kind": "eval", "run_id": spec.run_id, "iteration": iteration, "done": done,
              "total": len(todo), "metrics": row})
    folder.mark_done(f"evaluated {len(todo)} external checkpoints")
