"""A method of your own, outside the package: copy this file and change it.

    adaptscope methods --plugin experiments/example_plugin.py
    adaptscope run --plugin experiments/example_plugin.py --methods tgan,frozen_mapping

The example is fine-tuning with the generator's mapping network held at its source weights, so
only the synthesis network adapts. Override the hooks of `Method` that your method changes
(trainable parameters, extra G / D losses, latent sampling, set-up, checkpointed state);
everything else (the loop, the metrics, the trajectories) is shared with the built-in methods.

Set-up has two hooks. `build()` runs on fresh and resumed runs alike, before the optimisers
exist: create modules that `extra_d_modules()` returns and check settings against the networks.
`setup()` runs on fresh runs only: compute the state that `state_dict()` saves, which a resumed
run restores with `load_state_dict()` instead. Checks that need no networks go in
`Params.__post_init__`, so a bad value fails when the experiment is loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

from adaptscope.methods import Method, hp, register_method


@register_method("frozen_mapping")
class FrozenMapping(Method):
    summary = "Example plugin: fine-tuning with the mapping network kept at its source weights."

    @dataclass
    class Params:
        freeze_mapping: bool = hp(True, "Keep the mapping network (z -> w) at its source weights.")

    def trainable_g_parameters(self) -> Iterator[nn.Parameter]:
        for name, param in self.ctx.g.named_parameters():
            if not (self.params.freeze_mapping and name.startswith("style.")):
                yield param
