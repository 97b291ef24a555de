"""The adaptation loop: one method on its generator family's training step, tracked on a schedule,
resumable.

At every point of the evaluation schedule the tracker records a row and the loop saves a
checkpoint with every state needed to continue bit-for-bit (networks, optimisers, method state,
RNGs, counters), so a run killed at any moment and resumed gives the rows of one that was not.
At the points of the cheap cadence in between (`schedule.cheap_every`) it records a cheap row
(p_t and the nearest-shot LPIPS) and saves nothing: a resumed run passes them again from the
last checkpoint, and the rows it has already recorded are kept.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from adaptscope.errors import TrainingDiverged
from adaptscope.methods.base import MethodBase
from adaptscope.spec import RunSpec
from adaptscope.track.export import live_exports
from adaptscope.track.rundir import RunDir
from adaptscope.track.tracker import Tracker
from adaptscope.train.diffusion_training import DiffusionTraining
from adaptscope.train.experiment import method_class
from adaptscope.train.gan_training import GANTraining

EventFn = Callable[[dict[str, Any]], None]


def _seed_everything(spec: RunSpec) -> torch.device:
    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    device = torch.device(spec.device)
    if device.type == "cuda":  # same seed, same rows: no autotuned or racing cuDNN kernels
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return device


def real_batch(shots: torch.Tensor, batch: int, flip: bool) -> torch.Tensor:
    """A random batch of the shots, each mirrored with probability 0.5 when `flip`.

    Every reference loop flips its training images at random (RandomHorizontalFlip, p 0.5:
    rosinality train.py, CDC train.py:583), so D sees 2K images, not K. Drawn from the global
    RNG, so a seeded run draws the same batches and flips on every resume.
    """
    real = shots[torch.randperm(len(shots))[:batch]]
    if not flip:
        return real
    mirror = (torch.rand(len(real)) < 0.5).to(real.device)
    return torch.where(mirror[:, None, None, None], real.flip(3), real)


class TrainingStats:
    """Means of every logged training scalar since the last row: the trajectory's `loss_*` and
    `grad_norm_*` columns. Sums stay on the device (no synchronisation per iteration)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, logged: dict[str, torch.Tensor]) -> None:
        for key, value in logged.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        """The means so far, then start again."""
        out = {k: float(v) / self.counts[k] for k, v in self.sums.items()}
        self.sums, self.counts = {}, {}
        return out


def run_adaptation(spec: RunSpec, run_dir: str | Path, on_event: EventFn | None = None) -> Path:
    """Adapt the source model with `spec.method` and track it; resumes from `run_dir`.

    The folder's lock is held throughout: a second process on the same folder is refused.
    The exports the folder's `log_to.json` names follow every recorded row (`live_exports`).
    """
    folder = RunDir(Path(run_dir))
    with folder.lock():  # taken before anything in the folder is written
        folder.clear_failed()
        try:
            with live_exports(folder, spec.run_id) as export:
                return _adapt(spec, folder, _both(export, on_event))
        except Exception as err:  # recorded for `adaptscope status`, wherever the run ran
            folder.mark_failed(f"{type(err).__name__}: {err}")
            raise


def _both(export: EventFn, on_event: EventFn | None) -> EventFn:
    """Each event to the exports, then to the caller's handler."""
    def emit(event: dict[str, Any]) -> None:
        export(event)
        if on_event is not None:
            on_event(event)
    return emit


def _training(spec: RunSpec, device: torch.device) -> GANTraining | DiffusionTraining:
    """The method's family's training state: networks from the source, the method, the step."""
    family = method_class(spec).family
    return DiffusionTraining(spec, device) if family == "diffusion" else GANTraining(spec, device)


def _adapt(spec: RunSpec, folder: RunDir, emit: EventFn) -> Path:
    folder.write_spec(spec)
    device = _seed_everything(spec)
    training = _training(spec, device)
    method, shots, sampled = training.method, training.shots, training.sampled

    # Built before any RNG state is restored: building backbones draws random initial weights.
    tracker = Tracker(spec, folder, training.target, family=training.family)
    training.attach(tracker)
    stats = TrainingStats()  # empty at every checkpoint: a row is recorded first
    iteration, elapsed, checkpointed = 0, 0.0, -1
    # The checkpoint's own row's training columns: its means since the previous row cannot be
    # recomputed after a resume, so a row lost with a rolled-back trajectory is recorded whole.
    checkpoint_columns: dict[str, Any] = {}
    if folder.checkpoint.exists():
        extra = training.restore(folder.checkpoint)
        random.setstate((extra["py_rng"][0], tuple(extra["py_rng"][1]), None))
        iteration, elapsed = int(extra["iteration"]), float(extra["elapsed"])
        checkpointed = iteration
        checkpoint_columns = dict(extra.get("row_training") or {})
    else:
        training.start_fresh()

    schedule = spec.schedule
    total, batch = spec.schedule.iterations, spec.train.batch
    t0 = time.perf_counter() - elapsed
    emit({"kind": "start", "run_id": spec.run_id, "iteration": iteration, "total": total})
    while True:
        if schedule.is_full(iteration):
            columns = _train_columns(stats, training, method, iteration)
            if iteration == checkpointed:
                columns = {**checkpoint_columns, **columns}
            row = tracker.record(iteration, iteration * batch, time.perf_counter() - t0, sampled,
                                 columns)
            if row is not None:
                emit({"kind": "eval", "run_id": spec.run_id, "iteration": iteration,
                      "total": total, "metrics": row})
            if iteration != checkpointed:
                training.save(folder.checkpoint, iteration=iteration,
                              elapsed=time.perf_counter() - t0, run_id=spec.run_id,
                              row_training=columns)
                checkpointed = iteration
        elif schedule.is_cheap(iteration):
            # The training means restart here even where the row is already recorded (a resumed
            # run), so every later row averages the iterations it would have uninterrupted.
            row = tracker.record_cheap(iteration, iteration * batch, time.perf_counter() - t0,
                                       sampled, _train_columns(stats, training, method,
                                                               iteration))
            if row is not None:
                emit({"kind": "cheap", "run_id": spec.run_id, "iteration": iteration,
                      "total": total, "metrics": row})
        if iteration >= total:
            break
        real = real_batch(shots, batch, spec.train.flip)
        try:
            stats.add(training(iteration, real))
        except TrainingDiverged as err:
            raise TrainingDiverged(
                f"{err}; the rows recorded so far are kept in {folder.trajectory}. Lower the "
                "learning rate or the method's loss weights and start a new run.") from err
        iteration += 1
        if iteration % 10 == 0:
            emit({"kind": "progress", "run_id": spec.run_id, "iteration": iteration,
                  "total": total})

    folder.mark_done(f"finished {total} iterations")
    emit({"kind": "done", "run_id": spec.run_id, "iteration": total, "total": total})
    return folder.path


def _train_columns(stats: TrainingStats, training: GANTraining | DiffusionTraining,
                   method: MethodBase, iteration: int) -> dict[str, Any]:
    """The row's training columns: the method's stage, loss / gradient means since the last
    row, the step's running state (ADA's p)."""
    return {"stage": method.stage(iteration), "stage_start": method.stage_start(iteration),
            **stats.means(), **training.columns()}
