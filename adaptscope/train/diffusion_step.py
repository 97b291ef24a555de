"""One diffusion training iteration, shared by every diffusion adaptation method.

The method gives its weighted loss terms on the real batch (the DDPM objective, and its own
terms); the step sums them, checks they are finite, takes one Adam step over the method's
trainable parameters and extra modules, and calls the method's hooks, as the GAN step does for
GAN methods. The learning rate follows `Method.lr_factor`, set every iteration (no state).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from adaptscope.errors import TrainingDiverged
from adaptscope.methods import Step
from adaptscope.methods.diffusion_base import DiffusionMethod
from adaptscope.models.diffusion import DiffusionModel
from adaptscope.spec import LoopSpec


@dataclass
class DiffusionStep:
    """The model, optimiser and method of one diffusion training."""

    model: DiffusionModel
    method: DiffusionMethod
    loop: LoopSpec
    params: list[torch.nn.Parameter] = field(init=False)
    opt: torch.optim.Adam = field(init=False)

    def __post_init__(self) -> None:
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.params = list(self.method.trainable_parameters())
        self.params += [p for m in self.method.extra_modules() for p in m.parameters()]
        for p in self.params:
            p.requires_grad_(True)
        self.opt = torch.optim.Adam(self.params, lr=self.loop.lr, betas=self.loop.betas)

    def __call__(self, iteration: int, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """Train one iteration on the real batch; returns each loss term as `loss_<term>`
        (detached scalars)."""
        method = self.method
        step = Step(iteration=iteration, real=real)
        for group in self.opt.param_groups:
            group["lr"] = self.loop.lr * method.lr_factor(iteration)
        self.model.train()
        terms = method.losses(step)
        for name, value in terms.items():
            if not torch.isfinite(value.detach()).all():
                raise TrainingDiverged(f"loss '{name}' became {value.item()} at iteration "
                                       f"{iteration}")
        self.opt.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        method.before_optimizer_step(step)
        self.opt.step()
        method.after_step(step)
        return {f"loss_{name}": value.detach() for name, value in terms.items()}
