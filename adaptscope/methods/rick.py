"""RICK: prune incompatible filters, preserve important ones (Zhao et al., CVPR 2023).

As the authors' train_dynamic_update_prune.py (TDUP) does it, on model_probe_tune.py's plain
StyleGAN2 (no AdAM-style kernel modulation, so no extra modules):
- Warm-up: G still, D trains its final layers only (TDUP:202-211, 518-519, 547); then G trains
  `convs.*`, D its blocks after convs.0 and its final layers (TDUP:908-931).
- At the start of iteration warmup_iter + k * fisher_every (TDUP:214): Fisher at G_ema and D_ema
  (TDUP:215-269, model_probe_tune.py:481-504), per filter (TDUP:282-349, see `filter_importance`),
  ranked in three pools across layers: G conv, G modulation, D conv + skip (TDUP:285-299, 352-353).
- Preserved filters (> preserve percentile) get zero gradients; pruned ones (<= prune percentile,
  < for D's skips) get zero weights and gradients, at every optimiser step of G and D
  (TDUP:312-384, 429-435, 484-490, 524-537, 569-582). Preserved sets are replaced at each
  estimation, pruned sets accumulate (TDUP:138-144, 386-393). G_ema and D_ema are not zeroed:
  they follow the zeros through the moving average (TDUP:697-698).
- Percentiles are in PERCENT, as np.percentile takes them: the code's prune_quantile 0.1 prunes the
  0.1st percentile, not 10 %. `prune_percentile` keeps that default; 10 gives a true 10 %.

Embedded world (1000 iterations): warmup_iter = 150, fisher_every = 25 keep the proportions of the
code's Babies run (warm-up 250 of 1750 iterations, 14 %; 31 estimations, here 34).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from adaptscope.methods.base import Method, Step, check_setting, hp
from adaptscope.methods.fisher import empirical_fisher

Masks = dict[str, dict[str, torch.Tensor]]  # network ("g" / "d") -> parameter -> (filters,) bool


class Unit(NamedTuple):
    """Parameters sharing one filter index: a weight, then the bias averaged with it if any."""

    pool: str  # filters ranked together: "g_conv", "g_fc" or "d_conv"
    params: tuple[str, ...]
    strict: bool = False  # pruned below the line, not at it (D's skip convs)

    @property
    def net(self) -> str:
        return self.pool[0]


def _axis(p: torch.Tensor) -> int:
    """The filter axis: `out` of G's (1, out, in, k, k) kernels, else the first (TDUP:526-529)."""
    return 1 if p.ndim == 5 else 0


def filter_importance(fisher: dict[str, torch.Tensor], unit: Unit) -> torch.Tensor:
    """Per filter: the weight's mean Fisher over all but the filter axis (G kernels: `out`,
    TDUP:282; modulation: input channel, TDUP:291), averaged with the bias's where the unit has one
    (G modulation, D convs: TDUP:293, 341; not D's skips, TDUP:349)."""
    w = fisher[unit.params[0]]
    per_filter = w.transpose(0, _axis(w)).flatten(1).mean(1)
    return (per_filter + fisher[unit.params[1]]) / 2 if len(unit.params) == 2 else per_filter


def decide(importance: list[tuple[Unit, torch.Tensor]], preserve_percentile: float,
           prune_percentile: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(preserved, pruned) masks per unit, from percentiles (in percent) of each pool."""
    pools = {u.pool: np.concatenate([f.double().cpu().numpy() for v, f in importance
                                     if v.pool == u.pool]) for u, _ in importance}
    lines = {k: np.percentile(v, [preserve_percentile, prune_percentile]) for k, v in pools.items()}
    return [(f.double() > lines[u.pool][0], f.double() < lines[u.pool][1] if u.strict
             else f.double() <= lines[u.pool][1]) for u, f in importance]


class RICK(Method):
    name = "rick"
    summary = "Fisher-ranked filters: prune the least important, freeze the most (Zhao 2023)."
    # [C] batch 2: its README trains with --batch 2 (README.md:97). Compare it with batch-4
    # methods in images seen (`adaptscope plot --x images`) as well as in iterations.
    loop_settings = {"batch": 2}

    @dataclass
    class Params:
        warmup_iter: int = hp(
            250, "[C] Iterations of D-head-only warm-up before the first estimation: README.md:98 "
            "(--warmup_iter 250; argparse default 10, TDUP:746), used at TDUP:202-214.")
        fisher_every: int = hp(
            50, "[C] Iterations between estimations: README.md:98 (--fisher_freq 50; "
            "argparse default 2, TDUP:742), used at TDUP:214.")
        n_fisher: int = hp(
            5, "[C] Fixed latents (one shot each) per Fisher estimate: README.md:97 "
            "(--num_fisher_img 5), TDUP:225-236.")
        preserve_percentile: float = hp(
            40.0, "[C] Percent: filters above this percentile keep their weights. README.md:98 "
            "(--fisher_quantile 40, Babies; 85 for AFHQ-Cat, README.md:110; argparse 75, "
            "TDUP:744).")
        prune_percentile: float = hp(
            0.1, "[C] PERCENT, as np.percentile takes it: filters at or below this percentile are "
            "zeroed. The code's 0.1 (TDUP:745, README.md:98; 0.075 for AFHQ-Cat) is the 0.1st "
            "percentile, not 10 %; 10 gives a true 10 %.")
        d_ema_decay: float = hp(
            0.5 ** (32 / 10_000), "[C] Decay of D's moving average, which the Fisher of D is "
            "taken at: TDUP:180, 698 (the same as G's).")

        def __post_init__(self) -> None:
            for key, low in (("warmup_iter", 0), ("fisher_every", 1), ("n_fisher", 1)):
                check_setting(getattr(self, key) >= low, f"rick.{key}", getattr(self, key),
                              f">= {low}")
            check_setting(0 <= self.preserve_percentile <= 100, "rick.preserve_percentile",
                          self.preserve_percentile, "a percent, 0 to 100")
            check_setting(0 <= self.prune_percentile <= self.preserve_percentile,
                          "rick.prune_percentile", self.prune_percentile,
                          "a percent from 0 to rick.preserve_percentile")
            check_setting(0 <= self.d_ema_decay < 1, "rick.d_ema_decay", self.d_ema_decay,
                          "0 <= decay < 1")

    def build(self) -> None:
        """The filter units of G and D and D's moving average (state a resumed run loads)."""
        g, d = self.ctx.g, self.ctx.d
        self.units = [Unit(pool, (f"convs.{k}.conv.{name}", *extra))
                      for k in range(len(g.convs)) for pool, name, extra in
                      (("g_conv", "weight", ()), ("g_fc", "modulation.weight",
                                                  (f"convs.{k}.conv.modulation.bias",)))]
        for b in range(1, len(d.convs)):
            self.units += [Unit("d_conv", (f"convs.{b}.conv1.0.weight", f"convs.{b}.conv1.1.bias")),
                           Unit("d_conv", (f"convs.{b}.conv2.1.weight", f"convs.{b}.conv2.2.bias")),
                           Unit("d_conv", (f"convs.{b}.skip.1.weight",), strict=True)]
        self.d_ema = copy.deepcopy(d).eval().requires_grad_(False)
        self.preserved: Masks = {"g": {}, "d": {}}
        self.pruned: Masks = {"g": {}, "d": {}}

    def setup(self) -> None:
        self.fisher_z = torch.randn(self.params.n_fisher, self.ctx.g.style_dim)
        if self._due(0):
            self.estimate()

    def _due(self, iteration: int) -> bool:  # estimated at the start of `iteration` (TDUP:214)
        since = iteration - self.params.warmup_iter
        return since >= 0 and since % self.params.fisher_every == 0

    def stages(self) -> list[tuple[str, int]]:
        return [("warmup", 0), ("adapt", self.params.warmup_iter)]

    def trains_generator(self, iteration: int) -> bool:
        """G still in the warm-up: no G backward, no path length (TDUP:518-519, 547)."""
        return iteration >= self.params.warmup_iter

    def trainable_g_parameters(self) -> Iterator[nn.Parameter]:
        return iter(self.ctx.g.convs.parameters())

    def trainable_d_parameters(self) -> Iterator[nn.Parameter]:
        d = self.ctx.d
        for module in [*list(d.convs)[1:], d.final_conv, d.final_linear]:
            yield from module.parameters()

    def fisher(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per-sample squared gradients at G_ema and D_ema of softplus(-D(G(z))) (G) and D's
        logistic loss on one shot and G(z) (D), averaged over latents fixed for the run
        (TDUP:225-269, _noise/*.pt; the code's divisor num_fisher_img * batch only rescales)."""
        nets = {"g": self.ctx.g_ema, "d": self.d_ema}
        names = {net: {n for u in self.units if u.net == net for n in u.params} for net in nets}
        leaves = {net: {n: p.detach().requires_grad_(True) for n, p in m.named_parameters()
                        if n in names[net]} for net, m in nets.items()}
        shots = self.ctx.shots

        def samples() -> Iterator[tuple[dict[str, torch.Tensor], int]]:
            for z in self.fisher_z.to(shots.device):
                real = shots[int(torch.randint(len(shots), ()))][None]
                if torch.rand(()) < 0.5:  # the loader's random flip (TDUP:793)
                    real = real.flip(3)
                fake, _ = functional_call(nets["g"], leaves["g"], ([z[None]],))
                fake_pred = functional_call(nets["d"], leaves["d"], (fake,))
                real_pred = functional_call(nets["d"], leaves["d"], (real,))
                yield {"g": F.softplus(-fake_pred).mean(),
                       "d": F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()}, 1

        return empirical_fisher(samples(), leaves)

    def update_masks(self, fisher: dict[str, dict[str, torch.Tensor]]) -> None:
        """Replace the preserved sets, add to the pruned ones (pruned filters stay pruned)."""
        importance = [(u, filter_importance(fisher[u.net], u)) for u in self.units]
        p = self.params
        for (u, _), (keep, cut) in zip(importance, decide(importance, p.preserve_percentile,
                                                          p.prune_percentile), strict=True):
            for name in u.params:
                self.preserved[u.net][name] = keep
                old = self.pruned[u.net].get(name)
                self.pruned[u.net][name] = cut if old is None else old | cut

    def estimate(self) -> None:
        self.update_masks(self.fisher())

    def before_optimizer_step(self, step: Step, which: str) -> None:
        net = self.ctx.g if which == "g" else self.ctx.d
        if step.iteration < self.params.warmup_iter:  # D's final layers only (G is still)
            for name, p in net.named_parameters():
                if not name.startswith("final"):
                    p.grad = None
            return
        params = dict(net.named_parameters())
        with torch.no_grad():
            for name, pruned in self.pruned[which].items():
                p, lead = params[name], (slice(None),) * _axis(params[name])
                p[(*lead, pruned)] = 0
                if p.grad is not None:
                    p.grad[(*lead, pruned | self.preserved[which][name])] = 0

    def after_step(self, step: Step) -> None:
        with torch.no_grad():
            for ema, p in zip(self.d_ema.parameters(), self.ctx.d.parameters(), strict=True):
                ema.lerp_(p, 1.0 - self.params.d_ema_decay)
        if self._due(step.iteration + 1):  # the masks the next iteration trains with
            self.estimate()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "d_ema": self.d_ema.state_dict(),
                "fisher_z": self.fisher_z, "preserved": self.preserved, "pruned": self.pruned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.d_ema.load_state_dict(state["d_ema"])
        self.fisher_z = state["fisher_z"]
        device = self.ctx.g.device
        self.preserved, self.pruned = ({net: {n: m.to(device) for n, m in ms.items()}
                                        for net, ms in state[key].items()}
                                       for key in ("preserved", "pruned"))
