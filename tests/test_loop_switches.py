"""The loop's switches change what training sees: `train.flip` mirrors the shots, ADA augments
every image D is shown (reals and fakes, in the D and the G step) and R1 differentiates the very
reals D's loss saw, and `train.mixing` is the probability of a two-style batch (the path-length
pass's too). Each is read
off spies on tiny networks, against counts known by construction or a binomial tolerance."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
from _tiny_world import tiny_spec

from adaptscope.methods import Method, MethodContext
from adaptscope.models import Discriminator, Generator
from adaptscope.spec import LoopSpec, ScheduleSpec
from adaptscope.track.tracker import Tracker
from adaptscope.train import loop as loop_module
from adaptscope.train.augment import AdaptiveAugment
from adaptscope.train.loop import real_batch, run_adaptation
from adaptscope.train.step import GANStep

CH = {4: 8, 8: 8, 16: 8}


def within_binomial(count: int, n: int, p: float, k: float = 4.5) -> bool:
    """Whether `count` successes of `n` lies within `k` standard deviations of Binomial(n, p)."""
    return abs(count - n * p) <= k * math.sqrt(n * p * (1 - p))


# --- train.flip --------------------------------------------------------------------------------


def mirrored_count(batch: torch.Tensor, shots: torch.Tensor) -> int:
    """How many images of `batch` are a mirrored shot; each must be exactly a shot or a mirror."""
    count = 0
    for image in batch:
        as_drawn = any(torch.equal(image, s) for s in shots)
        mirrored = any(torch.equal(image, s.flip(2)) for s in shots)
        assert as_drawn != mirrored  # left-right asymmetric shots: never both
        count += mirrored
    return count


def test_flip_mirrors_about_half_the_shots_and_without_flip_none():
    # A ramp across x, different per shot: every shot differs from its own and others' mirrors.
    ramp = torch.linspace(-1, 1, 8).expand(3, 8, 8)
    shots = torch.stack([ramp * (k + 1) / 10 for k in range(10)])
    torch.manual_seed(0)
    n = 0
    flipped = 0
    for _ in range(250):
        batch = real_batch(shots, 4, flip=True)
        flipped += mirrored_count(batch, shots)
        n += len(batch)
    assert n == 1000
    # Each image mirrored with probability 1/2: Binomial(1000, 0.5) is 500 +- 16 (1 std).
    assert within_binomial(flipped, n, 0.5)
    assert sum(mirrored_count(real_batch(shots, 4, flip=False), shots) for _ in range(50)) == 0


# --- ADA and R1 ------------------------------------------------------------------------------


class RecordingAugment(AdaptiveAugment):
    """ADA at a fixed p that records every (input, output) it produced."""

    def __init__(self, p: float) -> None:
        super().__init__(p=p, adaptive=False)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, images):
        out = super().__call__(images)
        self.calls.append((images.detach().clone(), out.detach().clone()))
        return out


class SeeingMethod(Method):
    """Plain fine-tuning that records what G produced and what D was shown."""

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(Method.Params(), ctx)
        self.generated: list[torch.Tensor] = []
        self.shown: list[torch.Tensor] = []
        self.styles: list[int] = []

    def generate(self, g, modules, styles, **kwargs):
        self.styles.append(len(styles))
        out = super().generate(g, modules, styles, **kwargs)
        self.generated.append(out[0].detach().clone())
        return out

    def d_logits(self, step, images):
        self.shown.append(images.detach().clone())
        return super().d_logits(step, images)


def tiny_step(mixing: float = 0.0, **loop) -> tuple[GANStep, SeeingMethod, torch.Tensor]:
    torch.manual_seed(0)
    g, d = Generator(16, 16, 1, channels=CH), Discriminator(16, channels=CH)
    method = SeeingMethod(MethodContext(g=g, d=d, mixing=mixing))
    spec = LoopSpec(**{"batch": 4, "lr": 0.0, "r1_gamma": 1.0, "r1_every": 2,
                       "path_regularize": 0.0, "mixing": mixing, **loop})
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    return GANStep(g, d, copy.deepcopy(g), method, spec), method, real


def test_ada_augments_what_d_sees_reals_and_fakes_in_the_d_step_fakes_in_the_g_step(one_thread):
    step, method, real = tiny_step(augment="ada", ada_p=1.0)
    aug = RecordingAugment(1.0)
    step.augment = aug
    step(1, real)  # 1 % r1_every != 0: no R1 pass
    d_fake, g_fake = method.generated
    (in_real, out_real), (in_d_fake, out_d_fake), (in_g_fake, out_g_fake) = aug.calls
    # The pipeline got the reals and each step's fakes ...
    assert torch.equal(in_real, real)
    assert torch.equal(in_d_fake, d_fake) and torch.equal(in_g_fake, g_fake)
    for before, after in aug.calls:  # ... and at p = 1 changed every image
        assert not torch.isclose(before, after, atol=1e-3).flatten(1).all(1).any()
    # D was shown exactly what the pipeline returned: reals, D-step fakes, G-step fakes.
    assert len(method.shown) == 3
    for shown, expected in zip(method.shown, (out_real, out_d_fake, out_g_fake), strict=True):
        assert torch.equal(shown, expected)


def test_r1_differentiates_the_same_augmented_reals_that_d_loss_saw(one_thread):
    step, method, real = tiny_step(augment="ada", ada_p=1.0)
    aug = RecordingAugment(1.0)
    step.augment = aug
    logged = step(2, real)  # 2 % r1_every == 0: the R1 pass runs
    assert "loss_r1" in logged
    d_real, _, r1_real, _ = method.shown  # D step reals, D step fakes, R1 reals, G step fakes
    assert not torch.isclose(d_real, real, atol=1e-3).flatten(1).all(1).any()  # augmented
    assert torch.equal(r1_real, d_real)
    assert len(aug.calls) == 3  # R1 drew no augmentation of its own


# --- train.mixing ------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.9, 0.1])
def test_the_sampler_draws_two_styles_with_the_mixing_probability(p):
    torch.manual_seed(0)
    method = Method(Method.Params(), MethodContext(g=Generator(16, 16, 1, channels=CH),
                                                   d=None, mixing=p))
    n = 2000
    two = 0
    for _ in range(n):
        styles = method.sample_latents(None, 3)
        assert len(styles) in (1, 2) and all(s.shape == (3, 16) for s in styles)
        two += len(styles) == 2
    # Binomial(2000, 0.9 or 0.1): 1800 or 200, +- 13 (1 std); the other side is 1600 away.
    assert within_binomial(two, n, p)


@pytest.mark.parametrize("p", [0.9, 0.1])
def test_the_generator_gets_two_styles_in_mixing_share_of_training_calls(p, one_thread):
    step, method, real = tiny_step(mixing=p, r1_gamma=0.0)
    for iteration in range(15):
        step(iteration, real)
    n = len(method.styles)
    assert n == 30  # a D-step and a G-step batch per iteration
    # Binomial(30, 0.9 or 0.1): 27 or 3, +- 1.6 (1 std); the inverted rate is 24 away.
    assert within_binomial(sum(k == 2 for k in method.styles), n, p)


@pytest.mark.parametrize("p", [0.9, 0.1])
def test_the_path_length_pass_draws_mixing_noise_too(p, one_thread):
    """rosinality and CDC draw the path-length batch with `mixing_noise` (train.py), not one
    style: the pass's generator call gets two styles in `mixing` of its draws."""
    step, method, real = tiny_step(mixing=p, r1_gamma=0.0, path_regularize=1.0, path_every=1)
    for iteration in range(15):
        step(iteration, real)
    assert len(method.styles) == 45  # D step, G step and path-length pass per iteration
    path_pass = method.styles[2::3]
    assert within_binomial(sum(k == 2 for k in path_pass), len(path_pass), p)


@pytest.mark.parametrize(("flip", "mixing"), [(True, 0.1), (False, 0.3)])
def test_the_loop_passes_train_flip_and_mixing_on(flip, mixing, source_checkpoint, tmp_path,
                                                  monkeypatch, one_thread):
    flips: list[bool] = []
    rates: list[float] = []
    sample = Method.sample_latents

    def batch_spy(shots, batch, flip_arg):
        flips.append(flip_arg)
        return real_batch(shots, batch, flip_arg)

    def sampler_spy(self, step, batch):
        rates.append(self.ctx.mixing)
        return sample(self, step, batch)

    monkeypatch.setattr(loop_module, "real_batch", batch_spy)
    monkeypatch.setattr(Method, "sample_latents", sampler_spy)
    monkeypatch.setattr(Tracker, "record", lambda *args, **kwargs: None)  # no evaluation
    spec = tiny_spec(source_checkpoint, schedule=ScheduleSpec(iterations=2, eval_every=2))
    run_adaptation(replace(spec, train=replace(spec.train, flip=flip, mixing=mixing)),
                   tmp_path / "run")
    assert flips == [flip, flip]  # one real batch per iteration
    assert rates == [mixing] * 4  # the D step's and the G step's latents, per iteration
