"""A GAN method's training state for the adaptation loop: the networks built from the source,
the method, the shared GAN step, and how they are checkpointed and restored bit-for-bit."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import torch

from adaptscope.errors import CheckpointError
from adaptscope.methods import Method, MethodContext
from adaptscope.methods.base import AdaptedGenerator
from adaptscope.models import save_checkpoint
from adaptscope.spec import RunSpec
from adaptscope.track.target import TargetData, load_target
from adaptscope.track.tracker import Tracker
from adaptscope.train.experiment import method_class, method_params
from adaptscope.train.preflight import damaged_checkpoint, load_source
from adaptscope.train.state import device_rng_state, restore
from adaptscope.train.step import GANStep


class GANTraining:
    """G, D and their frozen copies from the source, the method, and the shared GAN step."""

    family = "gan"

    def __init__(self, spec: RunSpec, device: torch.device):
        # The order of construction is the order of the random draws: keep it.
        source, start = load_source(spec.source)
        g = copy.deepcopy(start).to(device).train()
        d = source.d.to(device).train()
        g_source = copy.deepcopy(start).to(device).eval().requires_grad_(False)
        d_source = copy.deepcopy(d).eval().requires_grad_(False)
        g_ema = source.g_ema.to(device).eval().requires_grad_(False)
        self.target: TargetData = load_target(
            spec.target.data, g.size, spec.target.shots, spec.target.shots_seed,
            spec.target.files, spec.target.shots_file, spec.target.validation_fraction)
        self.shots = self.target.shots.to(device)
        self.ctx = MethodContext(g=g, d=d, g_ema=g_ema, g_source=g_source, d_source=d_source,
                                 shots=self.shots, mixing=spec.train.mixing)
        method: Method = method_class(spec)(method_params(spec), self.ctx)
        method.build()  # fresh and resumed runs alike: modules the method adds (CDC's head)
        for module in method.extra_d_modules() + method.extra_g_modules():
            module.to(device)
        method.ema_g_modules = [copy.deepcopy(m).eval().requires_grad_(False)
                                for m in method.extra_g_modules()]
        self.method = method
        self.step = GANStep(g, d, g_ema, method, spec.train)
        self.sampled = AdaptedGenerator(method, g_ema)  # what evaluation measures

    def attach(self, tracker: Tracker) -> None:
        """Give the method the protocol's LPIPS network (BSA's perceptual loss)."""
        self.ctx.perceptual = tracker.evaluator.lpips_net

    def start_fresh(self) -> None:
        for p in self.step.g_params:
            p.requires_grad_(True)
        self.method.setup()  # fresh runs only: state the checkpoint carries (EWC's Fisher)
        for ema, module in zip(self.method.ema_g_modules, self.method.extra_g_modules(),
                               strict=True):
            ema.load_state_dict(module.state_dict())  # the averages start where setup left them

    def restore(self, path: Path) -> dict[str, Any]:
        """Networks, optimisers, method state and torch RNGs from `path`; returns the rest."""
        step = self.step
        try:
            extra = restore(path, step.g, step.d, step.g_ema, step.g_opt, step.d_opt)
        except CheckpointError as err:
            raise damaged_checkpoint(path, err) from err
        self.method.load_state_dict(extra["method"])
        if step.augment is not None:
            step.augment.load_state_dict(extra["augment"])
        step.mean_path_length = extra["mean_path_length"].to(step.g.device)
        return extra

    def __call__(self, iteration: int, real: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.step(iteration, real)

    def columns(self) -> dict[str, Any]:
        """The row's columns of the step's running state: ADA's p."""
        return {} if self.step.augment is None else {"ada_p": float(self.step.augment.p)}

    def save(self, path: Path, **common: Any) -> None:
        """Everything needed to continue bit-for-bit, with the loop's own `common` entries."""
        step = self.step
        py_state = random.getstate()
        save_checkpoint(
            path, g_ema=step.g_ema, g=step.g, d=step.d,
            g_optim=step.g_opt.state_dict(), d_optim=step.d_opt.state_dict(),
            method=self.method.state_dict(),
            augment=step.augment.state_dict() if step.augment is not None else None,
            torch_rng=torch.get_rng_state(),
            device_rng=device_rng_state(step.g.device), py_rng=[py_state[0], list(py_state[1])],
            mean_path_length=step.mean_path_length.cpu(), **common)
