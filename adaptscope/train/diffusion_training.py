"""A diffusion method's training state for the adaptation loop: the model and its frozen source
copy, the method, the shared diffusion step, what evaluation samples, and how it is all
checkpointed and restored bit-for-bit (the same contract as `gan_training`)."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from adaptscope.errors import CheckpointError
from adaptscope.files import load_weights_only, save_torch
from adaptscope.methods.diffusion_base import DiffusionContext, DiffusionMethod
from adaptscope.models.diffusion import DiffusionModel, FixedNoise
from adaptscope.spec import DEFAULT_SAMPLER_STEPS, RunSpec
from adaptscope.track.target import TargetData, load_target
from adaptscope.track.tracker import Tracker
from adaptscope.train.diffusion_step import DiffusionStep
from adaptscope.train.experiment import method_class, method_params
from adaptscope.train.preflight import damaged_checkpoint, load_diffusion_source
from adaptscope.train.state import device_rng_state

RUN_FORMAT = "adaptscope-diffusion-run-1"


class SampledDiffusion:
    """A diffusion model as its method generates with it: the evaluator's view. Sample k is
    the protocol's deterministic sampler run from the k-th fixed initial noise of the seed."""

    family = "diffusion"

    def __init__(self, method: DiffusionMethod, model: DiffusionModel, steps: int,
                 precision: str = "float32", noise: str = "model"):
        self.method = method
        self.model = model
        self.sampler = model.sampler(steps, precision, noise)

    @property
    def size(self) -> int:
        return self.model.size

    @property
    def device(self) -> torch.device:
        return self.model.device

    def eval(self) -> SampledDiffusion:
        return self  # the model's training mode is the step's business

    def fixed_batches(self, seed: int, total: int, batch_size: int) -> Iterator[torch.Tensor]:
        return FixedNoise(self.size, seed).batches(total, batch_size)

    def generate(self, inputs: torch.Tensor) -> torch.Tensor:
        denoiser = self.method.denoiser()
        was_training = denoiser.training
        denoiser.eval()
        try:
            return self.sampler(inputs.to(self.device), denoiser)
        finally:
            denoiser.train(was_training)


class DiffusionTraining:
    """The model adapted from the source, its frozen copy, the method and the diffusion step."""

    family = "diffusion"

    def __init__(self, spec: RunSpec, device: torch.device):
        source = load_diffusion_source(spec.source).model
        model = copy.deepcopy(source).to(device).train()
        frozen = copy.deepcopy(source).to(device).eval().requires_grad_(False)
        self.target: TargetData = load_target(
            spec.target.data, model.size, spec.target.shots, spec.target.shots_seed,
            spec.target.files, spec.target.shots_file, spec.target.validation_fraction)
        self.shots = self.target.shots.to(device)
        self.ctx = DiffusionContext(model=model, source=frozen, shots=self.shots)
        method: DiffusionMethod = method_class(spec)(method_params(spec), self.ctx)
        method.build()
        for module in method.extra_modules():
            module.to(device)
        self.method = method
        self.step = DiffusionStep(model, method, spec.train)
        self.sampled = SampledDiffusion(
            method, model, spec.metrics.sampler_steps or DEFAULT_SAMPLER_STEPS,
            spec.metrics.sampler_precision or "float32", spec.metrics.sampler_noise or "model")

    def attach(self, tracker: Tracker) -> None:
        """Nothing of the tracker's is needed by the diffusion methods."""

    def start_fresh(self) -> None:
        self.method.setup()

    def restore(self, path: Path) -> dict[str, Any]:
        """The model, optimiser, method state and torch RNGs from `path`; returns the rest."""
        try:
            obj = load_weights_only(path, what="diffusion run checkpoint", error=CheckpointError,
                                    fix="delete the run folder and start the run again")
            if obj.get("format") != RUN_FORMAT:
                raise CheckpointError(f"{path} is not a diffusion run checkpoint")
            self.step.model.load_state_dict(obj["model"], strict=True)
            self.step.opt.load_state_dict(obj["optimizer"])
            self.method.load_state_dict(obj["method"])
        except (CheckpointError, KeyError, RuntimeError, ValueError) as err:
            error = err if isinstance(err, CheckpointError) else CheckpointError(str(err))
            raise damaged_checkpoint(path, error) from err
        torch.set_rng_state(obj["torch_rng"])
        device = self.step.model.device
        if obj.get("device_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(obj["device_rng"], device)
        return obj

    def __call__(self, iteration: int, real: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.step(iteration, real)

    def columns(self) -> dict[str, Any]:
        return {}

    def save(self, path: Path, **common: Any) -> None:
        py_state = random.getstate()
        save_torch({"format": RUN_FORMAT, "model": self.step.model.state_dict(),
                    "optimizer": self.step.opt.state_dict(), "method": self.method.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "device_rng": device_rng_state(self.step.model.device),
                    "py_rng": [py_state[0], list(py_state[1])], **common}, path)
