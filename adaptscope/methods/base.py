"""The adaptation-method strategy interface and its registry.

Every method runs on the same loop (`adaptscope.train.loop`); a method only says what differs:
which parameters train, extra generator / discriminator losses, how latents are drawn, how the
discriminator is read (image or patch level), what it builds and computes before training, and
state to checkpoint. So the only difference between two trajectories is the method.

The built-in methods are registered in one visible list in `adaptscope.methods`; a plugin
registers its own with `@register_method`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from adaptscope.errors import ConfigError
from adaptscope.models import Discriminator, Generator
from adaptscope.models.sampling import LatentBatch, fixed_latent_batches
from adaptscope.registry import Registry


def mixing_noise(batch: int, dim: int, mixing: float,
                 device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """rosinality's `mixing_noise`: two styles with probability `mixing` (style mixing), else
    one. No draw decides it when `mixing` is 0, so a run without mixing draws what it always did."""
    if mixing > 0 and torch.rand(()).item() < mixing:
        return list(torch.randn(2, batch, dim, device=device).unbind(0))
    return [torch.randn(batch, dim, device=device)]


@dataclass
class MethodContext:
    """What a method may use: the networks being adapted, frozen source copies and the shots.

    Source pretraining runs the plain `Method` with no source networks and no shots (None).
    """

    g: Generator
    d: Discriminator
    g_ema: Generator | None = None  # the moving average of g that evaluation samples
    g_source: Generator | None = None  # frozen copy of the source generator
    d_source: Discriminator | None = None  # frozen copy of the source discriminator
    shots: torch.Tensor | None = None  # the few-shot target images, (K, 3, H, W) in [-1, 1]
    # The protocol's LPIPS network (an adaptscope.metrics LPIPSNet, the one evaluation uses), for
    # methods with a perceptual loss (BSA); set by the loop before `setup()` / `load_state_dict()`.
    perceptual: nn.Module | None = None
    mixing: float = 0.9


@dataclass
class Step:
    """One training iteration as a method sees it."""

    iteration: int
    real: torch.Tensor  # real batch of target images


class MethodBase:
    """What every adaptation method declares, whatever its generator family: its name, family,
    hyperparameters, fixed loop settings, stages and learning-rate schedule, and the two set-up
    hooks. `Method` (GANs, below) and `DiffusionMethod` (`adaptscope.methods.diffusion_base`)
    add their family's training hooks; the loop picks the family's training step by `family`.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # "gan" or "diffusion": the generator family the method adapts; a source of the other
    # family is refused before a run starts.
    family: ClassVar[str] = "gan"
    # Loop settings this method runs with whatever the experiment says (TGAN+ADA: ADA on);
    # applied to every run of the method when an experiment is planned.
    loop_settings: ClassVar[dict[str, Any]] = {}
    # True: the reference runs each stage as a separate training (AdAM's probing and adaptation
    # scripts), so the optimisers start afresh (their state cleared) where the stage changes.
    stages_restart_optimizers: ClassVar[bool] = False

    @dataclass
    class Params:
        pass

    def __init__(self, params: Any, ctx: Any):
        self.params = params
        self.ctx = ctx

    # --- set-up ----------------------------------------------------------------------------
    def build(self) -> None:
        """Create structure that is not checkpointed state; runs on fresh AND resumed runs.

        Called once right after construction, before the optimisers are created: modules that
        `extra_d_modules()` returns (e.g. CDC's patch head; a resumed run then loads their
        weights) and checks of settings against the networks (raise ConfigError naming the
        setting, its value and what is allowed).
        """

    def setup(self) -> None:
        """Compute the state that `state_dict()` saves; runs on fresh runs only.

        A resumed run skips it and restores that state with `load_state_dict()` instead (e.g.
        EWC's Fisher information, CDC's anchors). Runs after `build()`.
        """

    @classmethod
    def preliminary_iterations(cls, params: Any) -> int:
        """Iterations of a first stage whose training is thrown away (AdAM's importance probing
        restarts from the source): they come on top of the schedule's iterations, so that every
        method gets `schedule.iterations` of adaptation."""
        return 0

    def stages(self) -> list[tuple[str, int]]:
        """The method's stages in order, each (name, first iteration): AdAM's importance
        probing, MineGAN's miner-only start, RICK's warm-up. Rows record the stage and where it
        began (`stage`, `stage_start`), so curves can be aligned at the last stage's start."""
        return [("adapt", 0)]

    def stage(self, iteration: int) -> str:
        """The stage of the training step at `iteration`: the last one begun by then (a row at
        a switch shows the new stage, with weights trained by the stages before it)."""
        return self._stage_at(iteration)[0]

    def stage_start(self, iteration: int) -> int:
        """The iteration where the stage at `iteration` began."""
        return self._stage_at(iteration)[1]

    def _stage_at(self, iteration: int) -> tuple[str, int]:
        begun = [(name, start) for name, start in self.stages() if start <= iteration]
        return begun[-1] if begun else self.stages()[0]

    def lr_factor(self, iteration: int) -> float:
        """Both optimisers' learning rate at `iteration`, as a factor of the configured one (a
        step schedule such as BSA's x0.2 every 3000 iterations); 1 by default."""
        return 1.0

    def state_dict(self) -> dict[str, Any]:
        """The method's own checkpointed state (none by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict()` saved."""


class Method(MethodBase):
    """Plain fine-tuning behaviour; subclasses override what their method changes.

    `Params` is the method's hyperparameter dataclass: every field has a default and, in its
    docstring or comment, its provenance ([C] confirmed in the authors' code, [S] second-hand,
    [U] unconfirmed). Value checks that need no networks belong in its `__post_init__` (raise
    ConfigError), so a bad value fails when the experiment is loaded, before any run starts.

    The loop calls, in order: the constructor, `build()` (fresh and resumed runs), then either
    `setup()` (fresh run) or `load_state_dict()` (resumed run). After `build()` the loop sets
    `ema_g_modules`: a moving-average copy of each of `extra_g_modules()`, kept with g_ema's
    decay and read by evaluation.
    """

    # Generator loss terms whose gradient norms on G the trajectory records (EWC: its penalty
    # beside the adversarial term); each costs one extra backward pass per iteration.
    grad_norm_terms: ClassVar[tuple[str, ...]] = ()
    # False: no discriminator at all (BSA). The loop then skips D's step, R1 and path length, and
    # the generator step minimises `g_extra_losses(step, None)` alone.
    adversarial: ClassVar[bool] = True

    ctx: MethodContext

    def __init__(self, params: Any, ctx: MethodContext):
        super().__init__(params, ctx)
        self.ema_g_modules: list[nn.Module] = []

    # --- set-up ----------------------------------------------------------------------------
    def extra_d_modules(self) -> list[nn.Module]:
        """Modules trained with the discriminator's optimiser, created in `build()`."""
        return []

    def extra_g_modules(self) -> list[nn.Module]:
        """Modules trained with the generator's optimiser, created in `build()` (MineGAN's
        miner, AdAM's kernel modulations, BSA's scales, shifts and codes). The loop keeps a
        moving-average copy of each (`ema_g_modules`), which evaluation passes to `generate`."""
        return []

    def trainable_g_parameters(self) -> Iterator[nn.Parameter]:
        return iter(self.ctx.g.parameters())

    def trainable_d_parameters(self) -> Iterator[nn.Parameter]:
        return iter(self.ctx.d.parameters())

    # --- per iteration --------------------------------------------------------------------
    def trains_generator(self, iteration: int) -> bool:
        """False in a stage where G stays fixed (RICK's warm-up): the loop still computes G's
        adversarial loss for the log (drawing the same latents) but takes no G step and skips
        path length, as a reference loop that only gates G's backward does. Read by the
        adversarial step; a method without D (`adversarial = False`) trains G throughout."""
        return True

    def generate(self, g: Generator, modules: list[nn.Module], styles: list[torch.Tensor],
                 **kwargs: Any) -> tuple[torch.Tensor, Any]:
        """Run the generator as this method does; every generator call of the loop and of
        evaluation goes through here. `modules` are `extra_g_modules()` in training and their
        moving averages in evaluation. Styles given with `input_is_latent=True` are W latents and
        must reach `g` unchanged. Default: `g(styles, **kwargs)`."""
        return g(styles, **kwargs)

    def sample_latents(self, step: Step, batch: int) -> list[torch.Tensor]:
        """Latents for the adversarial terms; default: rosinality's mixing noise."""
        return mixing_noise(batch, self.ctx.g.style_dim, self.ctx.mixing)

    def d_logits(self, step: Step, images: torch.Tensor) -> torch.Tensor:
        """Discriminator logits used by the adversarial losses (image level by default)."""
        return self.ctx.d(images)

    def g_extra_losses(self, step: Step, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra generator terms, already weighted; keys name them in logs."""
        return {}

    def d_extra_losses(self, step: Step, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra discriminator terms, already weighted."""
        return {}

    def before_optimizer_step(self, step: Step, which: str) -> None:
        """After a backward pass, before the optimiser step of `which` ("g" or "d"), in every
        phase (main steps, R1, path length): mask gradients here. A parameter whose `.grad` is
        set to None keeps its value and its optimiser state this step; zeroing part of a gradient
        keeps that part of the parameter (Adam with beta1 = 0 does not move on a zero gradient)."""

    def after_step(self, step: Step) -> None:
        """Hook after both updates and the moving average (periodic re-estimation, pruning)."""

    # --- checkpointing --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The extra modules' weights (D's, G's and G's moving averages); extend it with the
        method's own state."""
        state = {f"module{i}": m.state_dict() for i, m in enumerate(self.extra_d_modules())}
        for i, (m, ema) in enumerate(zip(self.extra_g_modules(), self.ema_g_modules,
                                         strict=True)):
            state[f"g_module{i}"], state[f"g_module{i}_ema"] = m.state_dict(), ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, m in enumerate(self.extra_d_modules()):
            m.load_state_dict(state[f"module{i}"])
        for i, (m, ema) in enumerate(zip(self.extra_g_modules(), self.ema_g_modules,
                                         strict=True)):
            m.load_state_dict(state[f"g_module{i}"])
            ema.load_state_dict(state[f"g_module{i}_ema"])


class AdaptedGenerator(nn.Module):
    """A generator as its method samples it (`Method.generate` with the moving-average modules):
    what evaluation measures. Delegates the attributes the evaluator reads to `g`."""

    def __init__(self, method: Method, g: Generator):
        super().__init__()
        self.g = g
        self.extra = nn.ModuleList(method.ema_g_modules)
        self.method = method

    @property
    def style_dim(self) -> int:
        return self.g.style_dim

    @property
    def size(self) -> int:
        return self.g.size

    @property
    def device(self) -> torch.device:
        return self.g.device

    family = "gan"

    def make_noise(self, batch: int = 1, generator: torch.Generator | None = None
                   ) -> list[torch.Tensor]:
        return self.g.make_noise(batch, generator=generator)

    def fixed_batches(self, seed: int, total: int, batch_size: int) -> Iterator[LatentBatch]:
        """The generator's fixed inputs (z and noise maps) for `seed`, in batches."""
        return fixed_latent_batches(self, seed, total, batch_size)

    def generate(self, inputs: LatentBatch) -> torch.Tensor:
        """Images of one batch of fixed inputs, generated as the method generates."""
        return self([inputs.z.to(self.device)], noise=inputs.noise)[0]

    def forward(self, styles: list[torch.Tensor], **kwargs: Any) -> tuple[torch.Tensor, Any]:
        return self.method.generate(self.g, list(self.extra), styles, **kwargs)


METHODS: Registry[type[MethodBase]] = Registry(
    "method", hint=" (a method of your own is loaded with --plugin FILE.py or MODULE)")


def register_method(name: str) -> Callable[[type[MethodBase]], type[MethodBase]]:
    """Class decorator for a plugin's method: registers it under `name` and sets `cls.name`."""

    def wrap(cls: type[MethodBase]) -> type[MethodBase]:
        METHODS.register(name, cls)
        cls.name = name
        return cls

    return wrap


def get_method(name: str) -> type[MethodBase]:
    """The method registered as `name` (RegistryError listing the registered ones if none)."""
    return METHODS.get(name)


def check_setting(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ConfigError naming the setting `key`, its `value` and what is `allowed` unless ok."""
    if not ok:
        raise ConfigError(f"{key} = {value!r} is not allowed: {allowed}")


def param_docs(cls: type[MethodBase]) -> list[tuple[str, Any, str]]:
    """(name, default, provenance) of every hyperparameter, read from field metadata."""
    out = []
    for f in dataclasses.fields(cls.Params):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append((f.name, default, f.metadata.get("doc", "")))
    return out


def hp(default: Any, doc: str) -> Any:
    """A hyperparameter field with its default and provenance note."""
    return field(default=default, metadata={"doc": doc})


def paired_generation(ctx: MethodContext, z: torch.Tensor, shared_noise: bool):
    """Images and per-layer features of the same latents in G_source and G.

    Returns (source_images, source_features, target_images, target_features); the source side
    carries no gradient. With `shared_noise` both draw the same noise maps, so the two sides
    differ only by weights; without, each draws its own (as a generator called with random
    noise does in CDC's train.py).
    """
    g = ctx.g
    z = z.to(g.device)
    noise_s = g.make_noise(z.shape[0])
    noise_t = noise_s if shared_noise else g.make_noise(z.shape[0])
    with torch.no_grad():
        img_s, _, feats_s = ctx.g_source([z], noise=noise_s, return_features=True)
    img_t, _, feats_t = g([z], noise=noise_t, return_features=True)
    return img_s, feats_s, img_t, feats_t
