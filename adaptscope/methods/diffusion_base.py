"""The diffusion family's method interface: what a diffusion adaptation method changes on the
shared diffusion step (`adaptscope.train.diffusion_step`).

The step draws a real batch of shots, asks the method for its weighted loss terms, sums them,
takes one optimiser step over `trainable_parameters()` and the method's extra modules, and
calls `after_step`. Evaluation samples `denoiser()` with the protocol's deterministic sampler,
so a method that adapts through extra modules (LoRA) is measured as it generates. Plain
`DiffusionMethod` is full fine-tuning on the DDPM objective.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from adaptscope.methods.base import MethodBase, Step
from adaptscope.models.diffusion import DiffusionModel, denoising_loss


@dataclass
class DiffusionContext:
    """What a diffusion method may use: the model being adapted, a frozen copy of the source,
    and the shots ((K, 3, H, W) in [-1, 1])."""

    model: DiffusionModel
    source: DiffusionModel | None = None
    shots: torch.Tensor | None = None


class DiffusionMethod(MethodBase):
    """Full fine-tuning of every UNet weight on the DDPM objective; subclasses override what
    their method changes. The loop calls the constructor, `build()`, then `setup()` (fresh run)
    or `load_state_dict()` (resumed run), as for GAN methods."""

    family: ClassVar[str] = "diffusion"
    # Adam's betas of the diffusion references (guided-diffusion's AdamW, diffusers' training
    # examples: torch defaults) instead of the GAN loop's (0, 0.99).
    loop_settings: ClassVar[dict[str, Any]] = {"betas": (0.9, 0.999)}
    ctx: DiffusionContext

    def __init__(self, params: Any, ctx: DiffusionContext):
        super().__init__(params, ctx)

    def extra_modules(self) -> list[nn.Module]:
        """Modules created in `build()` and trained with the optimiser (LoRA's factors);
        checkpointed by the default `state_dict`."""
        return []

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """What the optimiser updates besides `extra_modules()`: every UNet weight here."""
        return iter(self.ctx.model.parameters())

    def denoiser(self) -> nn.Module:
        """The noise predictor as this method adapts it: what training and evaluation call."""
        return self.ctx.model

    def losses(self, step: Step) -> dict[str, torch.Tensor]:
        """The weighted loss terms of one step on the real batch `step.real`; keys name them in
        the trajectory (`loss_<key>`). Default: the DDPM objective alone."""
        return {"diffusion": denoising_loss(self.ctx.model, step.real, self.denoiser()).loss}

    def before_optimizer_step(self, step: Step) -> None:
        """After the backward pass, before the optimiser step: mask gradients here."""

    def after_step(self, step: Step) -> None:
        """Hook after the optimiser step."""

    def state_dict(self) -> dict[str, Any]:
        return {f"module{i}": m.state_dict() for i, m in enumerate(self.extra_modules())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, m in enumerate(self.extra_modules()):
            m.load_state_dict(state[f"module{i}"])
