"""AdAM: adaptation-aware kernel modulation (Zhao et al., NeurIPS 2022; code yunqing-me/AdAM).

Kernels get a rank-1 modulation W * (1 + v u^T) (v over output units), biases a shift b
(model_adam.py:17-38,199-208,432-459,522,653; op/fused_act.py:92): in G every mapping, style and
conv weight, noise strength and bias (model_adam.py:694-766), in D every conv before `final_*`
(model_adam.py:1072-1094); G and D run with them through `functional_call`. One iteration counter,
so rows show what probing costs. "probe": the modulations train, and D's `final_*`
(AdAM_importance_probing.py:498-518); then their Fisher, per-sample squared gradients of the G
loss through g_ema and the modulations' average, and of D's loss on one real and one fake
(importance_probing.py:193-261). A unit scores mean(F_u) + F_v, (mean(F_u) + F_v + F_b) / 2 with a
bias; above the `quantile` percentile of its group (G convs, G style linears, D res-block convs)
it is important (AdAM_main_adaptation.py:709-813). "adapt" starts anew (main_adaptation.py:181-191,
821-834): G, D, g_ema from the source, a second set of fresh modulations, fresh optimisers
(main_adaptation.py:879-888, so D's `final_*` lose the Adam state of probing), v and b of
unimportant units zeroed; important units keep the source weights and adapt by modulation, the
rest fine-tune (main_adaptation.py:232-254,346-383).

Differences, each a switch whose default follows the paper and whose "reference" setting is the
code's, which produced the published numbers:
- `conv_view`: the code views its conv product ger(u, v), (in*k*k, out), as (out, in, k, k) with
  no transpose (model_adam.py:207,458), so its v does not index the filters its masks pick and
  the kept units modulate part of every filter (half of it at quantile 50); "filters" (default)
  lets v index output units as in its linear layers (model_adam.py:34): kept filters, whole;
- `style_scale`: the code's KML_fc scales W s by 1/sqrt(out_dim) where EqualLinear has
  1/sqrt(in_dim) (model_adam.py:28,249); for a style linear (style_dim -> C inputs of a conv,
  model_adam.py:436,455) that multiplies W s by sqrt(style_dim / C): x sqrt(2) and x 2 in the
  layers that read 256 and 128 channels (128 and 256 px at channel multiplier 2), so the code's
  iteration-0 generator is not the source;
  "source" (default) keeps the source's scale.
D's Fisher uses D, not an average (importance_probing.py:414); path length maps z with the
unmodulated mapping (the loop's `_path_length_sample`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from adaptscope.methods.base import Method, Step, check_setting, hp
from adaptscope.methods.fisher import empirical_fisher

Ranked = list[tuple[str, str | None]]  # (kernel, the bias in its score or None)


def _units(t: torch.Tensor) -> torch.Tensor:
    """`t` with output units first (ModulatedConv2d weights are (1, out, in, k, k))."""
    return t[0] if t.dim() == 5 else t


CONV_VIEWS = ("filters", "reference")
STYLE_SCALES = ("source", "reference")


class Modulations(nn.Module):
    """Rank-1 modulations (u, v) of `kernels` and shifts b of `biases` of one network.

    `conv_view` and `style_scale` choose between the paper's form and the code's (see the
    module docstring); neither changes the parameters, so checkpoints hold the same tensors."""

    def __init__(self, net: nn.Module, kernels: list[str], biases: list[str], std: float,
                 conv_view: str = "filters", style_scale: str = "source"):
        super().__init__()
        self.conv_view, self.style_scale = conv_view, style_scale
        params = dict(net.named_parameters())
        self.u, self.v, self.b = nn.ParameterDict(), nn.ParameterDict(), nn.ParameterDict()
        for name in kernels:  # ParameterDict keys cannot hold '.'
            w = _units(params[name])
            self.u[name.replace(".", ":")] = nn.Parameter(torch.randn(w[0].numel()) * std)
            self.v[name.replace(".", ":")] = nn.Parameter(torch.randn(w.shape[0]) * std)
        for name in biases:
            self.b[name.replace(".", ":")] = nn.Parameter(torch.zeros_like(params[name]))

    def overrides(self, net: nn.Module) -> dict[str, torch.Tensor]:
        """Effective parameters: W * (1 + v u^T) and bias + b.

        conv_view "reference": a conv kernel's product is the code's ger(u, v) viewed as the
        kernel's shape (model_adam.py:207,458). style_scale "reference": a linear kernel
        (in -> out) is multiplied by sqrt(in / out), so that EqualLinear's 1/sqrt(in) becomes
        KML_fc's 1/sqrt(out) (model_adam.py:28); 1 for the mapping's square layers."""
        params, out = dict(net.named_parameters()), {}
        for k, u in self.u.items():
            w = params[k.replace(":", ".")]
            if self.conv_view == "reference" and w.dim() >= 4:
                out[k.replace(":", ".")] = w * (1 + torch.outer(u, self.v[k]).view(w.shape))
            else:
                out[k.replace(":", ".")] = w * (1 + torch.outer(self.v[k], u).view(w.shape))
            if self.style_scale == "reference" and w.dim() == 2 and w.shape[0] != w.shape[1]:
                out[k.replace(":", ".")] = out[k.replace(":", ".")] * math.sqrt(
                    w.shape[1] / w.shape[0])
        for k, b in self.b.items():
            out[k.replace(":", ".")] = params[k.replace(":", ".")] + b
        return out

    def zero_units(self, ranked: Ranked, keep: dict[str, torch.Tensor], grad: bool) -> None:
        """Zero v and b (or their gradients) of the units not kept."""
        for w, b in ranked:
            for name, store in [(w, self.v)] + ([(b, self.b)] if b else []):
                p = store[name.replace(".", ":")]
                t = p.grad if grad else p.data
                if t is not None:
                    _units(t)[~keep[w]] = 0


def importance(fisher: dict[str, torch.Tensor], groups: list[Ranked],
               quantile: float) -> dict[str, torch.Tensor]:
    """Per ranked kernel, its important units: score above the `quantile` percentile (linear
    interpolation, as np.percentile) of its group. `fisher` keys: 'u:', 'v:', 'b:' + name."""
    keep = {}
    for group in groups:
        scores = {}
        for w, b in group:
            s = (fisher["u:" + w].mean() + fisher["v:" + w]).double()
            scores[w] = (s + fisher["b:" + b].reshape(s.shape)) / 2 if b else s
        cut = torch.quantile(torch.cat(list(scores.values())), quantile / 100)
        keep.update({w: s > cut for w, s in scores.items()})
    return keep


class AdAM(Method):
    name = "adam"
    summary = "Fisher-probed kernel modulation: keep important kernels, tune the rest (Zhao 2022)."
    stages_restart_optimizers = True  # adaptation's own Adams (main_adaptation.py:879-888)

    @dataclass
    class Params:
        probe_iterations: int = hp(
            500, "[C] Probing iterations (_bash_importance_probing.sh:13 --fisher_freq 500; "
            "AdAM_importance_probing.py:180), before 1,500 of adaptation "
            "(_bash_main_adaptation.sh:13). Probing restarts from the source, so it comes on "
            "top of schedule.iterations (`preliminary_iterations`): the embedded study runs "
            "250 + 1,000 (experiments/all-methods.toml).")
        n_fisher: int = hp(
            1000, "[C] Latents, one per gradient, in the Fisher: 250 batches of 4 "
            "(_bash_importance_probing.sh:13; noise_generation.py:13-14; "
            "AdAM_importance_probing.py:193-198). Embedded world: 200 (under a minute, one core).")
        quantile: float = hp(
            50.0, "[C] Percentile of a group's scores above which a unit is important "
            "(AdAM_main_adaptation.py:599,720; 75 for AFHQ-Cat, _bash_main_adaptation.sh:22).")
        init_std: float = hp(
            1e-7, "[C] Std of u and v at start; b starts at 0 (model_adam.py:23-25,432-433).")
        conv_view: str = hp(
            "filters",
            "[C] How a conv kernel's u and v combine: filters (v over output filters, u over "
            "(in, k, k): kept filters are modulated whole, the paper's kernel modulation) or "
            "reference (the code's ger(u, v), (in*k*k, out), viewed as (out, in, k, k) without a "
            "transpose, model_adam.py:207,458: a kept unit touches part of every filter; the "
            "published numbers came from it).")
        style_scale: str = hp(
            "source",
            "[C] Scale of a modulated style linear's W s: source (EqualLinear's 1/sqrt(in), "
            "iteration 0 is the source generator) or reference (KML_fc's 1/sqrt(out), "
            "model_adam.py:28: x sqrt(style_dim / C), so the code's iteration-0 generator differs "
            "from the source where C < style_dim; the published numbers came from it).")

        def __post_init__(self) -> None:
            for key, ok, allowed in (
                    ("probe_iterations", self.probe_iterations >= 1, "1 or more"),
                    ("n_fisher", self.n_fisher >= 1, "1 or more"),
                    ("quantile", 0 <= self.quantile <= 100, "from 0 to 100"),
                    ("init_std", self.init_std > 0, "above 0 (u = v = 0 get no gradient)"),
                    ("conv_view", self.conv_view in CONV_VIEWS, " or ".join(CONV_VIEWS)),
                    ("style_scale", self.style_scale in STYLE_SCALES, " or ".join(STYLE_SCALES))):
                check_setting(ok, f"adam.{key}", getattr(self, key), allowed)

    def build(self) -> None:
        g, d, std = self.ctx.g, self.ctx.d, self.params.init_std
        gp, dp = dict(g.named_parameters()), dict(d.named_parameters())
        gk = [n for n, p in gp.items() if n.endswith("weight") and p.dim() >= 2]
        gb = [n for n in gp if n.endswith(("bias", "noise.weight"))]
        dk = [n for n, p in dp.items() if n.startswith("convs.") and p.dim() == 4]
        db = [n for n in dp if n.startswith("convs.") and n.endswith("bias")]
        # a D conv's score takes the activation bias after it (main_adaptation.py:770,795)
        after = {w: f"{w.rsplit('.', 2)[0]}.{int(w.rsplit('.', 2)[1]) + 1}.bias" for w in dk}
        n = len(g.convs)
        self.ranked: dict[str, list[Ranked]] = {
            "g": [[(f"convs.{i}.conv.weight", None) for i in range(n)],
                  [(f"convs.{i}.conv.modulation.weight", f"convs.{i}.conv.modulation.bias")
                   for i in range(n)]],
            "d": [[(w, after[w] if after[w] in dp else None) for w in dk
                   if not w.startswith("convs.0.")]]}
        self.flat = {w: [x for group in gs for x in group] for w, gs in self.ranked.items()}
        view, scale = self.params.conv_view, self.params.style_scale
        self.mods = {"g": [Modulations(g, gk, gb, std, view, scale)  # [probe, adapt]
                           for _ in range(2)],
                     "d": [Modulations(d, dk, db, std, view) for _ in range(2)]}
        self.switched, self.keep = False, {"g": {}, "d": {}}
        # the source's g_ema: a resumed run restores g_ema only after build()
        self._g_ema_source = copy.deepcopy(self.ctx.g_ema.state_dict())

    def extra_g_modules(self) -> list[nn.Module]:
        return self.mods["g"]

    def extra_d_modules(self) -> list[nn.Module]:
        return self.mods["d"]

    def trainable_g_parameters(self) -> Iterator[nn.Parameter]:  # main_adaptation.py:836-850,380
        return (p for n, p in self.ctx.g.named_parameters()
                if n.startswith("convs.") and not n.endswith(("activate.bias", "noise.weight")))

    def trainable_d_parameters(self) -> Iterator[nn.Parameter]:  # main_adaptation.py:852-864
        return (p for n, p in self.ctx.d.named_parameters()
                if n not in ("convs.0.0.weight", "convs.0.1.bias"))

    @classmethod
    def preliminary_iterations(cls, params: Any) -> int:
        return params.probe_iterations  # adaptation restarts from the source after probing

    def stages(self) -> list[tuple[str, int]]:
        return [("probe", 0), ("adapt", self.params.probe_iterations)]

    def generate(self, g: nn.Module, modules: list[nn.Module], styles: list[torch.Tensor],
                 **kwargs: Any) -> tuple[torch.Tensor, Any]:
        mod = modules[int(self.switched)]
        return functional_call(g, mod.overrides(g), (styles,), kwargs)

    def d_logits(self, step: Step | None, images: torch.Tensor) -> torch.Tensor:
        d, mod = self.ctx.d, self.mods["d"][int(self.switched)]
        return functional_call(d, mod.overrides(d), (images,))

    def before_optimizer_step(self, step: Step, which: str) -> None:
        net = self.ctx.g if which == "g" else self.ctx.d
        if not self.switched:  # probing: modulations (and D's final layers) only
            for n, p in net.named_parameters():
                if not (which == "d" and n.startswith("final")):
                    p.grad = None
            return
        params, ranked = dict(net.named_parameters()), self.flat[which]
        for w, b in ranked:  # important units: the source weights stay
            for p in [params[w]] + ([params[b]] if b else []):
                if p.grad is not None:
                    _units(p.grad)[self.keep[which][w]] = 0
        self.mods[which][1].zero_units(ranked, self.keep[which], grad=True)

    def after_step(self, step: Step) -> None:
        if not self.switched and step.iteration == self.params.probe_iterations - 1:
            fisher = self._fisher()
            self.keep = {w: importance(fisher[w], self.ranked[w], self.params.quantile)
                         for w in ("g", "d")}
            ctx = self.ctx
            with torch.no_grad():
                for p, s in zip(ctx.d.parameters(), ctx.d_source.parameters(), strict=True):
                    p.copy_(s)
                ctx.g_ema.load_state_dict(self._g_ema_source)
                for which, mod in (("g", self.mods["g"][1]), ("g", self.ema_g_modules[1]),
                                   ("d", self.mods["d"][1])):
                    mod.zero_units(self.flat[which], self.keep[which], grad=False)
            self.switched = True

    def _fisher(self) -> dict[str, dict[str, torch.Tensor]]:
        """Mean per-sample squared gradients of the probe modulations, keyed as `importance`
        reads them; G's through g_ema and the modulations' moving average."""
        ctx, n = self.ctx, self.params.n_fisher
        g, mods = ctx.g_ema, {"g": self.ema_g_modules[0], "d": self.mods["d"][0]}
        named = {w: dict(m.named_parameters()) for w, m in mods.items()}

        def samples() -> Iterator[tuple[dict[str, torch.Tensor], int]]:
            for _ in range(n):
                z = torch.randn(1, g.style_dim, device=g.device)
                real = ctx.shots[torch.randint(len(ctx.shots), (1,))]
                real = real.flip(3) if torch.rand(()).item() < 0.5 else real
                fake, _ = functional_call(g, mods["g"].overrides(g), ([z],))
                # one image per D call, as the code: D's minibatch stddev would mix them
                fake_logit, real_logit = self.d_logits(None, fake), self.d_logits(None, real)
                yield {"g": F.softplus(-fake_logit).mean(),
                       "d": F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()}, 1

        for m in mods.values():
            m.requires_grad_(True)
        fisher = empirical_fisher(samples(), named)
        for m in mods.values():  # the loop sets D's flags again at each phase
            m.requires_grad_(False)
        return {w: {k.replace(":", ".").replace(".", ":", 1): v for k, v in s.items()}
                for w, s in fisher.items()}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "switched": self.switched, "keep": self.keep}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        device = self.ctx.g.device
        self.switched = bool(state["switched"])
        self.keep = {w: {k: v.to(device) for k, v in m.items()} for w, m in state["keep"].items()}
