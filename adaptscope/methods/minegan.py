"""MineGAN: a miner network steers the source generator's sampling towards the target (Wang 2020).

As the authors' StyleGAN2 code (MineGAN repo, folder styleGANv2) does it:
- The miner maps z to z before the mapping network: Linear(d, d), ReLU, Linear(d, d), d the
  latent width, PyTorch's default initialisation, no residual (model.py:382-396). Each latent of
  a mixed pair goes through it (train.py:130-144); G then maps the mined z as usual.
- A second, "semantic" miner replaces G's learned 4x4 constant input: a fresh 8-channel 4x4
  constant, 1x1 equalised convs 8 -> 32 -> 128 -> C4 with fused leaky ReLUs between (model.py:
  364-380), used in place of `G.input` in every call (model.py:556-563; train.py:211, 258, 277).
  Here a forward hook on `g.input` substitutes it, so G's class and keys stay the reference's.
- Both miners join G's Adam as parameter groups with G's lr and betas (train.py:549-555): here
  they are `extra_g_modules()`, trained by G's optimiser.
- Stage "mine": G stays fixed while the miners and D train, for iterations 0..1000 (step_dis =
  1000, G trains once i > step_dis: train.py:191, 249-252). Here G's gradients are dropped
  before every G optimiser step, so G and its Adam state are untouched. Then "joint".
- No moving average of the miners: evaluation samples g_ema through the live miners
  (train.py:35-37, 362; metric/metric.py:118-119). `eval_live_miners` keeps that, or samples
  through the loop's moving averages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adaptscope.methods.base import Method, Step, check_setting, hp
from adaptscope.models import Generator
from adaptscope.models.layers import EqualConv2d, FusedLeakyReLU


class Miner(nn.Module):
    """z -> z': a two-layer MLP of the latent width (model.py:382-389)."""

    def __init__(self, dim: int):
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.transform(z)


class InputMiner(nn.Module):
    """The synthesis network's 4x4 input, generated from a small constant (model.py:364-380)."""

    def __init__(self, channels: int, code_dim: int = 8, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, code_dim, size, size))
        self.conv1 = EqualConv2d(code_dim, code_dim * 4, 1, bias=False)
        self.act1 = FusedLeakyReLU(code_dim * 4)
        self.conv2 = EqualConv2d(code_dim * 4, code_dim * 16, 1, bias=False)
        self.act2 = FusedLeakyReLU(code_dim * 16)
        self.conv3 = EqualConv2d(code_dim * 16, channels, 1, bias=False)

    def forward(self, batch: int) -> torch.Tensor:
        out = self.conv3(self.act2(self.conv2(self.act1(self.conv1(self.input)))))
        return out.repeat(batch, 1, 1, 1)


class MineGAN(Method):
    name = "minegan"
    summary = "Mine the source G's latent space with a miner, then fine-tune jointly (Wang 2020)."

    @dataclass
    class Params:
        miner_iterations: int = hp(
            1001,
            "[C] Iterations of the 'mine' stage (G fixed; miners and D train), from iteration 0: "
            "the code trains G once i > step_dis = 1000, so 0..1000 (train.py:191, 249-252). "
            "For the embedded world's 1000-iteration run, 300 keeps the code's share of the "
            "paper protocol's 3000 iterations (about a third) and ends on an evaluation row.")
        input_miner: bool = hp(
            False,
            "[C] True: replace G's 4x4 constant input with the semantic miner, as every "
            "generator call of the StyleGAN2 code does (model.py:556-563; train.py:211, 258, "
            "362); not in the paper. False (the default): the paper's miner on z alone, G's own "
            "constant input. The code's fresh network in place of the learned constant means "
            "iteration 0 is not the source generator, and on the embedded world adaptation "
            "does not recover from it in 1,000 iterations (reports/minegan-sensitivity/).")
        input_code_dim: int = hp(
            8, "[C] Channels of the semantic miner's constant (code_dim=8, train.py:532).")
        eval_live_miners: bool = hp(
            True,
            "[C] Evaluation samples g_ema through the live miners: the code keeps no average "
            "of them (train.py:35-37, 362; metric/metric.py:119). False: through their moving "
            "averages, kept by the loop with g_ema's decay.")

        def __post_init__(self) -> None:
            check_setting(self.miner_iterations >= 0, "minegan.miner_iterations",
                          self.miner_iterations, "0 or more")
            check_setting(self.input_code_dim >= 1, "minegan.input_code_dim",
                          self.input_code_dim, "1 or more")

    def build(self) -> None:
        g = self.ctx.g
        self.miner = Miner(g.style_dim)
        self.input_miner = (InputMiner(g.channels[4], self.params.input_code_dim)
                            if self.params.input_miner else None)

    def extra_g_modules(self) -> list[nn.Module]:
        return [self.miner] + ([self.input_miner] if self.input_miner is not None else [])

    def stages(self) -> list[tuple[str, int]]:
        return [("mine", 0), ("joint", self.params.miner_iterations)]

    def generate(self, g: Generator, modules: list[nn.Module], styles: list[torch.Tensor],
                 **kwargs: Any) -> tuple[torch.Tensor, Any]:
        """Each z through the miner (W latents pass unchanged); G's input from the semantic
        miner when it is on."""
        if self.params.eval_live_miners:
            modules = self.extra_g_modules()
        if not kwargs.get("input_is_latent", False):
            styles = [modules[0](s) for s in styles]
        if len(modules) < 2:
            return g(styles, **kwargs)
        source = modules[1]
        handle = g.input.register_forward_hook(lambda _m, _args, out: source(out.shape[0]))
        try:
            return g(styles, **kwargs)
        finally:
            handle.remove()

    def before_optimizer_step(self, step: Step, which: str) -> None:
        """In the mine stage G keeps its weights and Adam state; the miners' gradients stay."""
        if which == "g" and self.stage(step.iteration) == "mine":
            for p in self.ctx.g.parameters():
                p.grad = None
