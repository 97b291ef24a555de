"""EWC: elastic weight consolidation of the generator towards its source weights (Li 2020).

No author code exists. The penalty is lam * sum_i F_i (theta_i - theta_source_i)^2, summed over
every generator parameter i, with the empirical diagonal Fisher at the source weights
F_i = (1/N) sum_n (d log D_s(G_s(z_n)) / d theta_i)^2: per-sample squared gradients of the log
likelihood log sigmoid(D(G(z))) under the source D, averaged over N = n_fisher latents (AdAM's
code ranks kernels with the same per-sample squared-gradient form [S]).

How lam scales with the model. The penalty pulls parameter i with 2 * lam * F_i * drift_i, and
the Fisher's total sum_i F_i = E ||grad log D||^2 is spread over all P parameters, so the mean
F_i, and with it the pull of a given lam, changes by orders of magnitude between a 384k-parameter
toy generator and the 30M-parameter 256 px one (and with the reduction: a per-layer mean instead
of this sum divides it by each layer's size). So lam is not portable: calibrate it by the
ratio the trajectory records, `grad_norm_ewc / grad_norm_g_adv` (the penalty's gradient norm on G
beside the adversarial term's). `experiments/ewc-lambda.toml` sweeps lam on any source: run it
with `--set source.checkpoint=...` on the 256 px model and keep the lam whose realism (p_t)
converges near TGAN's, as the paper's EWC does (`reports/ewc-calibration/` for the toy model).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from adaptscope.methods.base import Method, Step, check_setting, hp
from adaptscope.methods.fisher import empirical_fisher


class EWC(Method):
    name = "ewc"
    summary = "Penalise G's drift from the source, weighted by Fisher information (Li 2020)."
    grad_norm_terms = ("g_adv", "ewc")

    @dataclass
    class Params:
        lam: float = hp(
            5e8,
            "[U] Penalty weight on sum_i F_i (theta_i - theta_source_i)^2, a SUM over every G "
            "parameter, and 5e8 as the paper's text is remembered for the 256 px model; its "
            "scale depends on the model, so calibrate it with experiments/ewc-lambda.toml "
            "(the embedded default uses 100).",
        )
        n_fisher: int = hp(
            200, "[U] Latents used to estimate the diagonal Fisher ('a few hundred').")
        fisher_batch: int = hp(
            1,
            "[U] Latents per gradient in the Fisher estimate: no EWC code exists, so 1 follows "
            "the empirical Fisher's definition (mean of per-sample squared gradients); larger "
            "is faster but squares batch means.",
        )

        def __post_init__(self) -> None:
            check_setting(self.n_fisher >= 1, "ewc.n_fisher", self.n_fisher, "1 or more")
            check_setting(self.fisher_batch >= 1, "ewc.fisher_batch", self.fisher_batch,
                          "1 or more")

    def setup(self) -> None:
        """Diagonal Fisher of log D(G(z)) at the source weights (source D and G).

        Checkpointed state, so fresh runs only: a resumed run loads it with `load_state_dict`.
        """
        g, d_src = self.ctx.g, self.ctx.d_source
        params = dict(g.named_parameters())

        def batches() -> Iterator[tuple[dict[str, torch.Tensor], int]]:
            n_done = 0
            while n_done < self.params.n_fisher:
                b = min(self.params.fisher_batch, self.params.n_fisher - n_done)
                img, _ = g([torch.randn(b, g.style_dim).to(g.device)])
                yield {"g": -F.softplus(-d_src(img)).mean()}, b  # log sigmoid(D(G(z)))
                n_done += b

        self.fisher = empirical_fisher(batches(), {"g": params})["g"]
        self.anchor = {k: p.detach().clone() for k, p in params.items()}

    def g_extra_losses(self, step: Step, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        penalty = sum((self.fisher[k] * (p - self.anchor[k]).pow(2)).sum()
                      for k, p in self.ctx.g.named_parameters())
        return {"ewc": self.params.lam * penalty}

    def state_dict(self) -> dict[str, Any]:
        return {"fisher": self.fisher, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Checkpoints load on the CPU; the penalty is computed beside G's parameters.
        device = self.ctx.g.device
        self.fisher = {k: v.to(device) for k, v in state["fisher"].items()}
        self.anchor = {k: v.to(device) for k, v in state["anchor"].items()}
