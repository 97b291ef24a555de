"""The shared adaptation loop: rosinality's train.py semantics, one method strategy, resumable.

Per iteration: a discriminator step (logistic loss, lazy R1), a generator step (non-saturating
loss), lazy path-length regularisation, and an EMA update of G; the method only adds its own
terms, latents, parameter masks and discriminator reading. At every point of the evaluation
schedule the tracker records a row and the loop saves a checkpoint with every state needed to
continue bit-for-bit (networks, optimisers, method state, RNGs, counters).
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from adaptscope.config import dumps_toml, read_toml
from adaptscope.data.domains import load_domain
from adaptscope.methods import MethodContext, Step
from adaptscope.models import CheckpointError, Generator, load_checkpoint, save_checkpoint
from adaptscope.track import schema
from adaptscope.track.tracker import Tracker
from adaptscope.train.losses import (
    d_logistic_loss,
    d_r1_penalty,
    ema_update,
    g_nonsaturating_loss,
    g_path_length_penalty,
)
from adaptscope.train.spec import (
    EMBEDDED_SOURCE,
    RunSpec,
    method_class,
    method_params,
    spec_from_dict,
)
from adaptscope.train.state import device_rng_state, lazy_adam, restore

EventFn = Callable[[dict[str, Any]], None]
CHECKPOINT = f"{schema.CHECKPOINT_DIR}/latest.pt"


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the rows recorded before it are kept."""


def source_checkpoint_path(spec: RunSpec) -> Path:
    if spec.source.checkpoint == EMBEDDED_SOURCE:
        return Path(str(resources.files("adaptscope") / "assets" / "toy_source.pt"))
    return Path(spec.source.checkpoint)


def check_inputs(spec: RunSpec) -> None:
    """Fail before any work when the source checkpoint or the target data is missing."""
    from adaptscope.data.domains import TOYFACES_PREFIX
    from adaptscope.data.errors import DataError

    path = source_checkpoint_path(spec)
    if not path.is_file():
        hint = ("the shipped toy model is missing from the installation; rebuild it with "
                "`adaptscope pretrain source`" if spec.source.checkpoint == EMBEDDED_SOURCE
                else "download it or set source.checkpoint (--set source.checkpoint=PATH)")
        raise CheckpointError(f"source checkpoint {path} does not exist: {hint}")
    data = spec.target.data
    if not data.startswith(TOYFACES_PREFIX) and not Path(data).exists():
        raise DataError(f"target data {data} does not exist: put the full target set there "
                        "(an image folder or .zip) or set target.data (--set target.data=PATH)")


def write_run_config(spec: RunSpec, run_dir: Path) -> None:
    """Record the resolved config; refuse to reuse a directory that holds another run."""
    path = run_dir / schema.CONFIG_FILE
    data = spec.to_dict()
    if path.exists():
        if spec_from_dict(read_toml(path)).to_dict() != data:
            raise ValueError(f"{run_dir} already holds a run with a different config; "
                             "use another --out directory or delete it")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_toml(data))


def _set_grad(params: list[torch.nn.Parameter], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def _check(losses: dict[str, torch.Tensor], iteration: int, run_dir: Path) -> None:
    for name, value in losses.items():
        v = value.detach()
        if not torch.isfinite(v).all():
            raise TrainingDiverged(
                f"loss '{name}' became {v.item()} at iteration {iteration}; the rows recorded "
                f"so far are kept in {run_dir / schema.TRAJECTORY_FILE}. Lower the learning rate "
                "or the method's loss weights and start a new run."
            )


def _path_length_sample(g: Generator, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and the W latents that path-length regularisation differentiates against.

    With the mapping network training (the reference case) W carries its graph; a method that
    freezes it leaves W without one, so the penalty starts from W itself.
    """
    if any(p.requires_grad for p in g.style.parameters()):
        return g([z], return_latents=True)
    w = g.style(z).detach().requires_grad_(True)
    return g([w], input_is_latent=True, return_latents=True)


def run_adaptation(spec: RunSpec, run_dir: str | Path, on_event: EventFn | None = None) -> Path:
    """Adapt the source model with `spec.method` and track it; resumes from `run_dir`."""
    run_dir = Path(run_dir)
    emit = on_event or (lambda event: None)
    write_run_config(spec, run_dir)
    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    device = torch.device(spec.device)
    if device.type == "cuda":  # same seed, same rows: no autotuned or racing cuDNN kernels
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    tc = spec.train

    source = load_checkpoint(source_checkpoint_path(spec))
    if source.d is None or (source.g is None and spec.source.weights == "g"):
        raise CheckpointError(
            f"{source.path} has no {'discriminator' if source.d is None else 'g'}: adaptation "
            "needs a training checkpoint with 'g' (or set source.weights = 'g_ema') and 'd'")
    start = source.g if spec.source.weights == "g" else source.g_ema
    g = copy.deepcopy(start).to(device).train()
    d = source.d.to(device).train()
    g_source = copy.deepcopy(start).to(device).eval().requires_grad_(False)
    d_source = copy.deepcopy(d).eval().requires_grad_(False)
    g_ema = source.g_ema.to(device).eval().requires_grad_(False)

    target = load_domain(spec.target.data, g.size, spec.target.shots, spec.target.shots_seed,
                         spec.target.files)
    shots = target.shots.to(device)
    ctx = MethodContext(g=g, d=d, g_source=g_source, d_source=d_source, shots=shots,
                        mixing=tc.mixing)
    method = method_class(spec)(method_params(spec), ctx)
    extra_modules = [m.to(device) for m in method.extra_d_modules()]
    g_params = list(method.trainable_g_parameters())
    d_params = list(method.trainable_d_parameters())
    d_params += [p for m in extra_modules for p in m.parameters()]
    for p in list(g.parameters()) + list(d.parameters()):
        p.requires_grad_(False)
    g_opt = lazy_adam(g_params, tc.lr, tc.path_every, tc.path_regularize > 0)
    d_opt = lazy_adam(d_params, tc.lr, tc.r1_every, tc.r1_gamma > 0)

    # Built before any RNG state is restored: building backbones draws random initial weights.
    tracker = Tracker(spec, run_dir, target)
    ckpt_path = run_dir / CHECKPOINT
    iteration, elapsed, checkpointed = 0, 0.0, -1
    mean_path_length = torch.zeros((), device=device)
    if ckpt_path.exists():
        extra = restore(ckpt_path, g, d, g_ema, g_opt, d_opt)
        method.load_state_dict(extra["method"])
        random.setstate((extra["py_rng"][0], tuple(extra["py_rng"][1]), None))
        iteration, elapsed = int(extra["iteration"]), float(extra["elapsed"])
        checkpointed = iteration
        mean_path_length = extra["mean_path_length"].to(device)
    else:
        _set_grad(g_params, True)
        method.setup()

    schedule = set(spec.schedule.evaluation_points())
    total = spec.schedule.iterations
    t0 = time.perf_counter() - elapsed
    emit({"kind": "start", "run_id": spec.run_id, "iteration": iteration, "total": total})
    while True:
        if iteration in schedule:
            row = tracker.record(iteration, iteration * tc.batch, time.perf_counter() - t0,
                                 g_ema)
            if row is not None:
                emit({"kind": "eval", "run_id": spec.run_id, "iteration": iteration,
                      "total": total, "metrics": row})
            if iteration != checkpointed:
                py_state = random.getstate()
                save_checkpoint(
                    ckpt_path, g_ema=g_ema, g=g, d=d, g_optim=g_opt.state_dict(),
                    d_optim=d_opt.state_dict(), method=method.state_dict(),
                    torch_rng=torch.get_rng_state(), device_rng=device_rng_state(device),
                    py_rng=[py_state[0], list(py_state[1])],
                    iteration=iteration, elapsed=time.perf_counter() - t0,
                    mean_path_length=mean_path_length.cpu(), run_id=spec.run_id)
                checkpointed = iteration
        if iteration >= total:
            break

        # --- discriminator ------------------------------------------------------------------
        step = Step(iteration=iteration, real=shots[torch.randperm(len(shots))[: tc.batch]])
        _set_grad(g_params, False)
        _set_grad(d_params, True)
        with torch.no_grad():
            fake, _ = g([z.to(device) for z in method.sample_latents(step, tc.batch)])
        d_losses = {"d_adv": d_logistic_loss(method.d_logits(step, step.real),
                                             method.d_logits(step, fake)),
                    **method.d_extra_losses(step, fake)}
        _check(d_losses, iteration, run_dir)
        d_opt.zero_grad(set_to_none=True)
        sum(d_losses.values()).backward()
        d_opt.step()
        if tc.r1_gamma > 0 and iteration % tc.r1_every == 0:
            real = step.real.detach().requires_grad_(True)
            real_logits = d(real)
            r1 = d_r1_penalty(real_logits, real)
            _check({"r1": r1}, iteration, run_dir)
            d_opt.zero_grad(set_to_none=True)
            (tc.r1_gamma / 2 * r1 * tc.r1_every + 0 * real_logits[0]).sum().backward()
            d_opt.step()

        # --- generator ----------------------------------------------------------------------
        _set_grad(g_params, True)
        _set_grad(d_params, False)
        fake, _ = g([z.to(device) for z in method.sample_latents(step, tc.batch)])
        g_losses = {"g_adv": g_nonsaturating_loss(method.d_logits(step, fake)),
                    **method.g_extra_losses(step, fake)}
        _check(g_losses, iteration, run_dir)
        g_opt.zero_grad(set_to_none=True)
        sum(g_losses.values()).backward()
        g_opt.step()
        if tc.path_regularize > 0 and iteration % tc.path_every == 0:
            n = max(1, tc.batch // tc.path_batch_shrink)
            fake, latents = _path_length_sample(g, torch.randn(n, g.style_dim, device=device))
            pl, mean_path_length = g_path_length_penalty(fake, latents, mean_path_length)
            _check({"path_length": pl}, iteration, run_dir)
            g_opt.zero_grad(set_to_none=True)
            (tc.path_regularize * tc.path_every * pl + 0 * fake[0, 0, 0, 0]).backward()
            g_opt.step()
        ema_update(g_ema, g, tc.ema_decay)
        method.after_step(step)
        iteration += 1
        if iteration % 10 == 0:
            emit({"kind": "progress", "run_id": spec.run_id, "iteration": iteration,
                  "total": total})

    (run_dir / schema.DONE_FILE).write_text(f"finished {total} iterations\n")
    emit({"kind": "done", "run_id": spec.run_id, "iteration": total, "total": total})
    return run_dir
