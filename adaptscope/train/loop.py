"""The adaptation loop: one method on the shared GAN step, tracked on a schedule, resumable.

At every point of the evaluation schedule the tracker records a row and the loop saves a
checkpoint with every state needed to continue bit-for-bit (networks, optimisers, method state,
RNGs, counters), so a run killed at any moment and resumed gives the rows of one that was not.
At the points of the cheap cadence in between (`schedule.cheap_every`) it records a cheap row
(p_t and the nearest-shot LPIPS) and saves nothing: a resumed run passes them again from the
last checkpoint, and the rows it has already recorded are kept.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from adaptscope.errors import CheckpointError, TrainingDiverged
from adaptscope.methods import Method, MethodContext
from adaptscope.methods.base import AdaptedGenerator
from adaptscope.models import save_checkpoint
from adaptscope.spec import RunSpec
from adaptscope.track.export import live_exports
from adaptscope.track.rundir import RunDir
from adaptscope.track.target import load_target
from adaptscope.track.tracker import Tracker
from adaptscope.train.experiment import method_class, method_params
from adaptscope.train.preflight import damaged_checkpoint, load_source
from adaptscope.train.state import device_rng_state, restore
from adaptscope.train.step import GANStep

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


def _adapt(spec: RunSpec, folder: RunDir, emit: EventFn) -> Path:
    folder.write_spec(spec)
    device = _seed_everything(spec)

    source, start = load_source(spec.source)
    g = copy.deepcopy(start).to(device).train()
    d = source.d.to(device).train()
    g_source = copy.deepcopy(start).to(device).eval().requires_grad_(False)
    d_source = copy.deepcopy(d).eval().requires_grad_(False)
    g_ema = source.g_ema.to(device).eval().requires_grad_(False)

    target = load_target(spec.target.data, g.size, spec.target.shots, spec.target.shots_seed,
                         spec.target.files, spec.target.shots_file,
                         spec.target.validation_fraction)
    shots = target.shots.to(device)
    ctx = MethodContext(g=g, d=d, g_ema=g_ema, g_source=g_source, d_source=d_source,
                        shots=shots, mixing=spec.train.mixing)
    method = method_class(spec)(method_params(spec), ctx)
    method.build()  # fresh and resumed runs alike: modules the method adds (CDC's patch head)
    for module in method.extra_d_modules() + method.extra_g_modules():
        module.to(device)
    method.ema_g_modules = [copy.deepcopy(m).eval().requires_grad_(False)
                            for m in method.extra_g_modules()]
    step = GANStep(g, d, g_ema, method, spec.train)
    sampled = AdaptedGenerator(method, g_ema)  # what evaluation measures

    # Built before any RNG state is restored: building backbones draws random initial weights.
    tracker = Tracker(spec, folder, target)
    ctx.perceptual = tracker.evaluator.lpips_net
    stats = TrainingStats()  # empty at every checkpoint: a row is recorded first
    iteration, elapsed, checkpointed = 0, 0.0, -1
    # The checkpoint's own row's training columns: its means since the previous row cannot be
    # recomputed after a resume, so a row lost with a rolled-back trajectory is recorded whole.
    checkpoint_columns: dict[str, Any] = {}
    if folder.checkpoint.exists():
        try:
            extra = restore(folder.checkpoint, g, d, g_ema, step.g_opt, step.d_opt)
        except CheckpointError as err:
            raise damaged_checkpoint(folder.checkpoint, err) from err
        method.load_state_dict(extra["method"])
        if step.augment is not None:
            step.augment.load_state_dict(extra["augment"])
        random.setstate((extra["py_rng"][0], tuple(extra["py_rng"][1]), None))
        iteration, elapsed = int(extra["iteration"]), float(extra["elapsed"])
        checkpointed = iteration
        step.mean_path_length = extra["mean_path_length"].to(device)
        checkpoint_columns = dict(extra.get("row_training") or {})
    else:
        for p in step.g_params:
            p.requires_grad_(True)
        method.setup()  # fresh runs only: state the checkpoint carries (EWC's Fisher, anchors)
        for ema, module in zip(method.ema_g_modules, method.extra_g_modules(), strict=True):
            ema.load_state_dict(module.state_dict())  # the averages start where setup left them

    schedule = spec.schedule
    total, batch = spec.schedule.iterations, spec.train.batch
    t0 = time.perf_counter() - elapsed
    emit({"kind": "start", "run_id": spec.run_id, "iteration": iteration, "total": total})
    while True:
        if schedule.is_full(iteration):
            columns = _train_columns(stats, step, method, iteration)
            if iteration == checkpointed:
                columns = {**checkpoint_columns, **columns}
            row = tracker.record(iteration, iteration * batch, time.perf_counter() - t0, sampled,
                                 columns)
            if row is not None:
                emit({"kind": "eval", "run_id": spec.run_id, "iteration": iteration,
                      "total": total, "metrics": row})
            if iteration != checkpointed:
                _save(folder, spec, step, method, iteration, time.perf_counter() - t0, columns)
                checkpointed = iteration
        elif schedule.is_cheap(iteration):
            # The training means restart here even where the row is already recorded (a resumed
            # run), so every later row averages the iterations it would have uninterrupted.
            row = tracker.record_cheap(iteration, iteration * batch, time.perf_counter() - t0,
                                       sampled, _train_columns(stats, step, method, iteration))
            if row is not None:
                emit({"kind": "cheap", "run_id": spec.run_id, "iteration": iteration,
                      "total": total, "metrics": row})
        if iteration >= total:
            break
        real = real_batch(shots, batch, spec.train.flip)
        try:
            stats.add(step(iteration, real))
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


def _train_columns(stats: TrainingStats, step: GANStep, method: Method,
                   iteration: int) -> dict[str, Any]:
    """The row's training columns: the method's stage, loss / gradient means since the last
    row, ADA's p."""
    columns: dict[str, Any] = {"stage": method.stage(iteration),
                               "stage_start": method.stage_start(iteration), **stats.means()}
    if step.augment is not None:
        columns["ada_p"] = float(step.augment.p)
    return columns


def _save(folder: RunDir, spec: RunSpec, step: GANStep, method: Method, iteration: int,
          elapsed: float, row_training: dict[str, Any]) -> None:
    """Everything needed to continue bit-for-bit from `iteration`, and the training columns of
    the row recorded there."""
    py_state = random.getstate()
    save_checkpoint(
        folder.checkpoint, g_ema=step.g_ema, g=step.g, d=step.d,
        g_optim=step.g_opt.state_dict(), d_optim=step.d_opt.state_dict(),
        method=method.state_dict(),
        augment=step.augment.state_dict() if step.augment is not None else None,
        torch_rng=torch.get_rng_state(),
        device_rng=device_rng_state(step.g.device), py_rng=[py_state[0], list(py_state[1])],
        iteration=iteration, elapsed=elapsed, mean_path_length=step.mean_path_length.cpu(),
        run_id=spec.run_id, row_training=row_training)
