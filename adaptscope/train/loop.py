"""The adaptation loop: one method on the shared GAN step, tracked on a schedule, resumable.

At every point of the evaluation schedule the tracker records a row and the loop saves a
checkpoint with every state needed to continue bit-for-bit (networks, optimisers, method state,
RNGs, counters), so a run killed at any moment and resumed gives the rows of one that was not.
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
from adaptscope.methods import MethodContext
from adaptscope.models import save_checkpoint
from adaptscope.spec import RunSpec
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


def run_adaptation(spec: RunSpec, run_dir: str | Path, on_event: EventFn | None = None) -> Path:
    """Adapt the source model with `spec.method` and track it; resumes from `run_dir`.

    The folder's lock is held throughout: a second process on the same folder is refused.
    """
    folder = RunDir(Path(run_dir))
    with folder.lock():  # taken before anything in the folder is written
        return _adapt(spec, folder, on_event or (lambda event: None))


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
                         spec.target.files)
    shots = target.shots.to(device)
    ctx = MethodContext(g=g, d=d, g_source=g_source, d_source=d_source, shots=shots,
                        mixing=spec.train.mixing)
    method = method_class(spec)(method_params(spec), ctx)
    method.build()  # fresh and resumed runs alike: modules the method adds (CDC's patch head)
    for module in method.extra_d_modules():
        module.to(device)
    step = GANStep(g, d, g_ema, method, spec.train)

    # Built before any RNG state is restored: building backbones draws random initial weights.
    tracker = Tracker(spec, folder, target)
    iteration, elapsed, checkpointed = 0, 0.0, -1
    if folder.checkpoint.exists():
        try:
            extra = restore(folder.checkpoint, g, d, g_ema, step.g_opt, step.d_opt)
        except CheckpointError as err:
            raise damaged_checkpoint(folder.checkpoint, err) from err
        method.load_state_dict(extra["method"])
        random.setstate((extra["py_rng"][0], tuple(extra["py_rng"][1]), None))
        iteration, elapsed = int(extra["iteration"]), float(extra["elapsed"])
        checkpointed = iteration
        step.mean_path_length = extra["mean_path_length"].to(device)
    else:
        for p in step.g_params:
            p.requires_grad_(True)
        method.setup()  # fresh runs only: state the checkpoint carries (EWC's Fisher, anchors)

    schedule = set(spec.schedule.evaluation_points())
    total, batch = spec.schedule.iterations, spec.train.batch
    t0 = time.perf_counter() - elapsed
    emit({"kind": "start", "run_id": spec.run_id, "iteration": iteration, "total": total})
    while True:
        if iteration in schedule:
            row = tracker.record(iteration, iteration * batch, time.perf_counter() - t0, g_ema)
            if row is not None:
                emit({"kind": "eval", "run_id": spec.run_id, "iteration": iteration,
                      "total": total, "metrics": row})
            if iteration != checkpointed:
                _save(folder, spec, step, method, iteration, time.perf_counter() - t0)
                checkpointed = iteration
        if iteration >= total:
            break
        real = shots[torch.randperm(len(shots))[:batch]]
        try:
            step(iteration, real)
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


def _save(folder: RunDir, spec: RunSpec, step: GANStep, method, iteration: int,
          elapsed: float) -> None:
    """Everything needed to continue bit-for-bit from `iteration`."""
    py_state = random.getstate()
    save_checkpoint(
        folder.checkpoint, g_ema=step.g_ema, g=step.g, d=step.d,
        g_optim=step.g_opt.state_dict(), d_optim=step.d_opt.state_dict(),
        method=method.state_dict(), torch_rng=torch.get_rng_state(),
        device_rng=device_rng_state(step.g.device), py_rng=[py_state[0], list(py_state[1])],
        iteration=iteration, elapsed=elapsed, mean_path_length=step.mean_path_length.cpu(),
        run_id=spec.run_id)
