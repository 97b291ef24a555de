"""One StyleGAN2 training iteration, shared by source pretraining and every adaptation method.

Phases, as in rosinality's train.py: discriminator main step (logistic loss), lazy R1 on real
images every `r1_every` iterations, generator main step (non-saturating loss), lazy path-length
regularisation every `path_every` iterations, EMA of G. A method (`adaptscope.methods.Method`)
only says what differs: trainable parameters, latents, how D is read, extra G / D terms, a hook
after the step. Pretraining is the plain `Method` with no source networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from adaptscope.errors import TrainingDiverged
from adaptscope.methods import Method, Step
from adaptscope.methods.base import mixing_noise
from adaptscope.models import Discriminator, Generator
from adaptscope.spec import LoopSpec
from adaptscope.train.augment import AdaptiveAugment
from adaptscope.train.losses import (
    d_logistic_loss,
    d_r1_penalty,
    ema_update,
    g_nonsaturating_loss,
    g_path_length_penalty,
)
from adaptscope.train.state import lazy_adam


def _set_grad(params: list[torch.nn.Parameter], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def _check(losses: dict[str, torch.Tensor], iteration: int) -> None:
    for name, value in losses.items():
        v = value.detach()
        if not torch.isfinite(v).all():
            raise TrainingDiverged(f"loss '{name}' became {v.item()} at iteration {iteration}")


def _path_length_sample(g: Generator, method: Method,
                        styles: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and the W latents that path-length regularisation differentiates against, from
    one style or two (mixing noise, as every reference draws it: rosinality train.py
    `mixing_noise(path_batch_size, ...)`).

    With the mapping network training (the reference case) W carries its graph; a method that
    freezes it leaves W without one, so the penalty starts from W itself.
    """
    modules = method.extra_g_modules()
    if any(p.requires_grad for p in g.style.parameters()):
        return method.generate(g, modules, styles, return_latents=True)
    ws = [g.style(z).detach().requires_grad_(True) for z in styles]
    return method.generate(g, modules, ws, input_is_latent=True, return_latents=True)


@dataclass
class GANStep:
    """The networks, optimisers and running state of one training, and its iteration."""

    g: Generator
    d: Discriminator
    g_ema: Generator
    method: Method
    loop: LoopSpec
    g_params: list[torch.nn.Parameter] = field(init=False)
    d_params: list[torch.nn.Parameter] = field(init=False)
    g_opt: torch.optim.Adam = field(init=False)
    d_opt: torch.optim.Adam = field(init=False)
    base_lrs: dict[torch.optim.Optimizer, list[float]] = field(init=False)  # before lr_factor
    mean_path_length: torch.Tensor = field(init=False)
    augment: AdaptiveAugment | None = field(init=False)

    def __post_init__(self) -> None:
        loop, method = self.loop, self.method
        self.g_params = list(method.trainable_g_parameters())
        self.g_params += [p for m in method.extra_g_modules() for p in m.parameters()]
        self.d_params = list(method.trainable_d_parameters())
        self.d_params += [p for m in method.extra_d_modules() for p in m.parameters()]
        for p in list(self.g.parameters()) + list(self.d.parameters()):
            p.requires_grad_(False)
        self.g_opt = lazy_adam(self.g_params, loop.lr, loop.path_every, loop.path_regularize > 0,
                               loop.betas)
        self.d_opt = lazy_adam(self.d_params, loop.lr, loop.r1_every, loop.r1_gamma > 0,
                               loop.betas)
        self.base_lrs = {opt: [g["lr"] for g in opt.param_groups]
                         for opt in (self.g_opt, self.d_opt)}
        self.mean_path_length = torch.zeros((), device=self.g.device)
        self.augment = None
        if loop.augment == "ada":
            self.augment = AdaptiveAugment(p=loop.ada_p, target=loop.ada_target,
                                           length=loop.ada_length, update_every=loop.ada_every,
                                           adaptive=loop.ada_p == 0)

    def __call__(self, iteration: int, real: torch.Tensor,
                 ema_decay: float | None = None) -> dict[str, torch.Tensor]:
        """Train one iteration on the real batch.

        Returns every loss term computed, keyed `loss_<term>`, and for the terms a method names
        in `grad_norm_terms`, the norm of that term's gradient on G as `grad_norm_<term>`
        (all detached scalars).
        """
        method = self.method
        step = Step(iteration=iteration, real=real)
        factor = method.lr_factor(iteration)  # set every iteration, so a resume needs no state
        for opt, base in self.base_lrs.items():
            for group, lr in zip(opt.param_groups, base, strict=True):
                group["lr"] = lr * factor
        logged: dict[str, torch.Tensor] = {}
        if method.adversarial:
            self._adversarial_step(step, logged)
        else:  # the generator's own terms only (BSA): no discriminator, no path length
            _set_grad(self.g_params, True)
            self._backward("g", step, method.g_extra_losses(step, None), logged)
        ema_decay = self.loop.ema_decay if ema_decay is None else ema_decay
        ema_update(self.g_ema, self.g, ema_decay)
        for ema, module in zip(method.ema_g_modules, method.extra_g_modules(), strict=True):
            ema_update(ema, module, ema_decay)
        method.after_step(step)
        if (method.stages_restart_optimizers
                and method.stage(iteration + 1) != method.stage(iteration)):
            self.g_opt.state.clear()
            self.d_opt.state.clear()
            # the next stage's own training starts its path-length mean at 0 too (AdAM's
            # adaptation script, main_adaptation.py:879-888, as rosinality's train.py)
            self.mean_path_length = torch.zeros_like(self.mean_path_length)
        return logged

    def _adversarial_step(self, step: Step, logged: dict[str, torch.Tensor]) -> None:
        g, method, loop, aug = self.g, self.method, self.loop, self.augment
        device, iteration = g.device, step.iteration
        modules = method.extra_g_modules()

        # --- discriminator: main step ---------------------------------------------------------
        _set_grad(self.g_params, False)
        _set_grad(self.d_params, True)
        with torch.no_grad():
            fake, _ = method.generate(
                g, modules, [z.to(device) for z in method.sample_latents(step, loop.batch)])
        # ADA augments what D sees, real and fake alike (CDC train.py:218-220)
        real_seen = aug(step.real) if aug is not None else step.real
        fake_seen = aug(fake) if aug is not None else fake
        real_logits = method.d_logits(step, real_seen)
        d_losses = {"d_adv": d_logistic_loss(real_logits, method.d_logits(step, fake_seen)),
                    **method.d_extra_losses(step, fake)}
        self._backward("d", step, d_losses, logged)
        if aug is not None:
            aug.update(real_logits.detach())

        # --- discriminator: lazy R1 -----------------------------------------------------------
        if loop.r1_gamma > 0 and iteration % loop.r1_every == 0:
            real_in = real_seen.detach().requires_grad_(True)
            # The method's path (image or patch level), patch logits averaged per image, as
            # CDC's train.py:264-269 takes R1.
            real_logits = method.d_logits(step, real_in)
            real_logits = real_logits.reshape(real_logits.shape[0], -1).mean(1)
            r1 = d_r1_penalty(real_logits, real_in)
            # `0 * logits` (as the reference) keeps the logits in the graph: every D parameter
            # then gets a gradient (zero where R1 does not reach it) instead of none, so Adam
            # steps all of them and their optimiser state matches the reference's.
            total = (loop.r1_gamma / 2 * r1 * loop.r1_every + 0 * real_logits[0]).sum()
            self._backward("d", step, {"r1": r1}, logged, total)

        # --- generator: main step -------------------------------------------------------------
        _set_grad(self.g_params, True)
        _set_grad(self.d_params, False)
        fake, _ = method.generate(
            g, modules, [z.to(device) for z in method.sample_latents(step, loop.batch)])
        fake_seen = aug(fake) if aug is not None else fake
        g_losses = {"g_adv": g_nonsaturating_loss(method.d_logits(step, fake_seen)),
                    **method.g_extra_losses(step, fake)}
        if not method.trains_generator(iteration):  # a stage with G fixed: losses logged only
            _check(g_losses, iteration)
            logged.update({f"loss_{k}": v.detach() for k, v in g_losses.items()})
            return
        for name in method.grad_norm_terms:
            logged[f"grad_norm_{name}"] = self._grad_norm(g_losses[name])
        self._backward("g", step, g_losses, logged)

        # --- generator: lazy path-length regularisation ---------------------------------------
        if loop.path_regularize > 0 and iteration % loop.path_every == 0:
            n = max(1, loop.batch // loop.path_batch_shrink)
            fake, latents = _path_length_sample(
                g, method, mixing_noise(n, g.style_dim, loop.mixing, device))
            pl, self.mean_path_length = g_path_length_penalty(fake, latents,
                                                              self.mean_path_length)
            # `0 * image` (as the reference): every G parameter that made the image gets a
            # (zero) gradient, so Adam steps the same set of parameters as the reference.
            total = loop.path_regularize * loop.path_every * pl + 0 * fake[0, 0, 0, 0]
            self._backward("g", step, {"path_length": pl}, logged, total)

    def _grad_norm(self, loss: torch.Tensor) -> torch.Tensor:
        """L2 norm of d loss / d (G's trainable parameters), leaving the graph for backward."""
        grads = torch.autograd.grad(loss, self.g_params, retain_graph=True, allow_unused=True)
        return torch.sqrt(sum(gr.pow(2).sum() for gr in grads if gr is not None)).detach()

    def _backward(self, which: str, step: Step, losses: dict[str, torch.Tensor],
                  logged: dict[str, torch.Tensor], total: torch.Tensor | None = None) -> None:
        """Backward of the losses' sum (or `total`) and a step of G's or D's optimiser."""
        _check(losses, step.iteration)
        opt = self.g_opt if which == "g" else self.d_opt
        opt.zero_grad(set_to_none=True)
        (sum(losses.values()) if total is None else total).backward()
        self.method.before_optimizer_step(step, which)
        opt.step()
        logged.update({f"loss_{k}": v.detach() for k, v in losses.items()})
