"""The adaptation-method strategy interface and its registry.

Every method runs on the same loop (`adaptscope.train.loop`); a method only says what differs:
which parameters train, extra generator / discriminator losses, how latents are drawn, how the
discriminator is read (image or patch level), one-off setup, and state to checkpoint. So the
only difference between two trajectories is the method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from adaptscope.models import Discriminator, Generator


@dataclass
class MethodContext:
    """What a method may use: the networks being adapted, frozen source copies and the shots."""

    g: Generator
    d: Discriminator
    g_source: Generator  # frozen copy of the source generator
    d_source: Discriminator  # frozen copy of the source discriminator
    shots: torch.Tensor  # the few-shot target images, (K, 3, H, W) in [-1, 1]
    mixing: float


@dataclass
class Step:
    """One training iteration as a method sees it."""

    iteration: int
    real: torch.Tensor  # real batch of target images


class Method:
    """Plain fine-tuning behaviour; subclasses override what their method changes.

    `Params` is the method's hyperparameter dataclass: every field has a default and, in its
    docstring or comment, its provenance ([C] confirmed in the authors' code, [S] second-hand,
    [U] unconfirmed).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    @dataclass
    class Params:
        pass

    def __init__(self, params: Any, ctx: MethodContext):
        self.params = params
        self.ctx = ctx

    # --- set-up ----------------------------------------------------------------------------
    def setup(self) -> None:
        """One-off work before the first iteration (e.g. EWC's Fisher information)."""

    def extra_d_modules(self) -> list[nn.Module]:
        """Modules trained with the discriminator's optimiser (e.g. CDC's patch head)."""
        return []

    def trainable_g_parameters(self) -> Iterator[nn.Parameter]:
        return iter(self.ctx.g.parameters())

    def trainable_d_parameters(self) -> Iterator[nn.Parameter]:
        return iter(self.ctx.d.parameters())

    # --- per iteration --------------------------------------------------------------------
    def sample_latents(self, step: Step, batch: int) -> list[torch.Tensor]:
        """Latents for the adversarial terms; default: rosinality's mixing noise."""
        dim = self.ctx.g.style_dim
        if self.ctx.mixing > 0 and torch.rand(()).item() < self.ctx.mixing:
            return list(torch.randn(2, batch, dim).unbind(0))
        return [torch.randn(batch, dim)]

    def d_logits(self, step: Step, images: torch.Tensor) -> torch.Tensor:
        """Discriminator logits used by the adversarial losses (image level by default)."""
        return self.ctx.d(images)

    def g_extra_losses(self, step: Step, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra generator terms, already weighted; keys name them in logs."""
        return {}

    def d_extra_losses(self, step: Step, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra discriminator terms, already weighted."""
        return {}

    def after_step(self, step: Step) -> None:
        """Hook after both updates (e.g. re-applying gradient masks)."""

    # --- checkpointing --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {f"module{i}": m.state_dict() for i, m in enumerate(self.extra_d_modules())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, m in enumerate(self.extra_d_modules()):
            m.load_state_dict(state[f"module{i}"])


METHODS: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator adding a method to the registry under `name`."""

    def wrap(cls: type[Method]) -> type[Method]:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is already registered by {METHODS[name]}")
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def get_method(name: str) -> type[Method]:
    """Look a method up by name (importing the built-in ones first)."""
    import adaptscope.methods  # noqa: F401  (registers the built-in methods)

    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(sorted(METHODS))} "
                       "(a method of your own is loaded with --plugin FILE.py or MODULE)")
    return METHODS[name]


def param_docs(cls: type[Method]) -> list[tuple[str, Any, str]]:
    """(name, default, provenance) of every hyperparameter, read from field metadata."""
    out = []
    for f in dataclasses.fields(cls.Params):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append((f.name, default, f.metadata.get("doc", "")))
    return out


def hp(default: Any, doc: str) -> Any:
    """A hyperparameter field with its default and provenance note."""
    return field(default=default, metadata={"doc": doc})


def paired_generation(ctx: MethodContext, z: torch.Tensor):
    """Images and per-layer features of the same latents (and noise) in G_source and G.

    Returns (source_images, source_features, target_images, target_features); the source side
    carries no gradient. Sharing the noise maps means the two sides differ only by weights.
    """
    g = ctx.g
    z = z.to(g.input.input.device)
    noise = g.make_noise(z.shape[0])
    with torch.no_grad():
        img_s, _, feats_s = ctx.g_source([z], noise=noise, return_features=True)
    img_t, _, feats_t = g([z], noise=noise, return_features=True)
    return img_s, feats_s, img_t, feats_t
