"""The shared GAN step against rosinality's train.py formulas, on a tiny model, for one step.

Spies record the gradients each optimiser steps with and the networks' weights at that moment;
the expected gradients are computed here with autograd from the written-out losses: logistic D
loss, R1 with gamma / 2 x r1_every, non-saturating G loss; then the lazy-ratio Adam settings and
the EMA.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from adaptscope.methods import Method, MethodContext
from adaptscope.models import Discriminator, Generator
from adaptscope.spec import LoopSpec
from adaptscope.train.losses import g_path_length_penalty
from adaptscope.train.step import GANStep

CH = {4: 8, 8: 8, 16: 8}


class FixedNoiseGenerator(Generator):
    """The generator with its stored noise maps: the same latent always gives the same image."""

    def forward(self, styles, **kwargs):
        kwargs.setdefault("randomize_noise", False)
        return super().forward(styles, **kwargs)


class FixedLatents(Method):
    """Plain fine-tuning whose latents are known: z_d for the D step, z_g for the G step."""

    def __init__(self, ctx: MethodContext, latents: list[torch.Tensor]):
        super().__init__(Method.Params(), ctx)
        self.latents = list(latents)

    def sample_latents(self, step, batch):
        return [self.latents.pop(0)]


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def spy_steps(opt: torch.optim.Optimizer, module: torch.nn.Module, log: list) -> None:
    """Record (weights, gradients) of `module` every time `opt` steps."""
    original = opt.step

    def step(*args, **kwargs):
        grads = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                 for n, p in module.named_parameters()}
        log.append((snapshot(module), grads))
        return original(*args, **kwargs)

    opt.step = step


def with_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    clone = copy.deepcopy(module)
    clone.load_state_dict({**clone.state_dict(), **weights})
    return clone.requires_grad_(True)


def gradients(loss: torch.Tensor, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    names, params = zip(*module.named_parameters(), strict=True)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g
            for n, p, g in zip(names, params, grads, strict=True)}


@pytest.fixture
def trained():
    torch.manual_seed(0)
    g = FixedNoiseGenerator(16, 16, 1, channels=CH)
    d = Discriminator(16, channels=CH)
    g_ema = copy.deepcopy(g).requires_grad_(False)
    real = torch.rand(2, 3, 16, 16) * 2 - 1
    z_d, z_g = torch.randn(2, 16), torch.randn(2, 16)
    loop = LoopSpec(batch=2, lr=0.01, r1_gamma=4.0, r1_every=2, path_regularize=0.0,
                    mixing=0.0, ema_decay=0.9)
    step = GANStep(g, d, g_ema, FixedLatents(MethodContext(g=g, d=d), [z_d, z_g]), loop)
    d_log, g_log = [], []
    spy_steps(step.d_opt, d, d_log)
    spy_steps(step.g_opt, g, g_log)
    g0, ema0 = snapshot(g), snapshot(g_ema)
    step(iteration=0, real=real)  # 0 % r1_every == 0: the lazy R1 step runs too
    return dict(g=g, d=d, g_ema=g_ema, step=step, real=real, z_d=z_d, z_g=z_g, loop=loop,
                d_log=d_log, g_log=g_log, g0=g0, ema0=ema0)


def assert_same(actual: dict, expected: dict) -> None:
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-7,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_discriminator_step_is_the_logistic_loss(trained):
    weights, grads = trained["d_log"][0]
    d = with_weights(trained["d"], weights)
    g0 = with_weights(trained["g"], trained["g0"])
    with torch.no_grad():
        fake, _ = g0([trained["z_d"]])
    loss = F.softplus(d(fake)).mean() + F.softplus(-d(trained["real"])).mean()
    assert_same(grads, gradients(loss, d))


def test_r1_step_is_gamma_over_two_times_r1_every_times_the_squared_input_gradient(trained):
    assert len(trained["d_log"]) == 2  # the main step, then the lazy R1 step
    weights, grads = trained["d_log"][1]
    d = with_weights(trained["d"], weights)
    x = trained["real"].clone().requires_grad_(True)
    (input_grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
    r1 = input_grad.pow(2).flatten(1).sum(1).mean()
    loop = trained["loop"]
    assert_same(grads, gradients(loop.r1_gamma / 2 * loop.r1_every * r1, d))


def test_generator_step_is_the_non_saturating_loss(trained):
    weights, grads = trained["g_log"][0]
    g = with_weights(trained["g"], weights)
    d_after = with_weights(trained["d"], snapshot(trained["d"]))  # after both D updates
    before_r1, _ = trained["d_log"][1]
    assert not all(torch.equal(before_r1[n], p) for n, p in snapshot(d_after).items())
    fake, _ = g([trained["z_g"]])
    loss = F.softplus(-d_after(fake)).mean()  # -log sigmoid(D(G(z))), not log(1 - sigmoid)
    assert_same(grads, gradients(loss, g))


def test_lazy_ratio_adam_and_ema(trained):
    step, loop = trained["step"], trained["loop"]
    c = loop.r1_every / (loop.r1_every + 1)
    (d_group,) = step.d_opt.param_groups
    assert d_group["lr"] == pytest.approx(loop.lr * c)
    assert d_group["betas"] == pytest.approx((0.0, 0.99 ** c))
    (g_group,) = step.g_opt.param_groups  # path length is off: no lazy ratio for G
    assert g_group["lr"] == pytest.approx(loop.lr) and g_group["betas"] == (0.0, 0.99)
    g_now, ema_now = snapshot(trained["g"]), snapshot(trained["g_ema"])
    for name, before in trained["ema0"].items():
        torch.testing.assert_close(ema_now[name], 0.9 * before + 0.1 * g_now[name])


def test_r1_is_skipped_between_its_lazy_iterations():
    torch.manual_seed(1)
    g, d = FixedNoiseGenerator(16, 16, 1, channels=CH), Discriminator(16, channels=CH)
    loop = LoopSpec(batch=2, r1_gamma=4.0, r1_every=2, path_regularize=0.0, mixing=0.0)
    method = FixedLatents(MethodContext(g=g, d=d), [torch.randn(2, 16), torch.randn(2, 16)])
    losses = GANStep(g, d, copy.deepcopy(g), method, loop)(1, torch.rand(2, 3, 16, 16))
    assert set(losses) == {"loss_d_adv", "loss_g_adv"}


def test_path_length_penalty_follows_its_formula():
    """img = w A: J^T y = y A^T, so the lengths are known in closed form."""
    torch.manual_seed(2)
    n, layers, dim, side = 3, 4, 5, 2
    a = torch.randn(dim, 3 * side * side)
    w = torch.randn(n, layers, dim, requires_grad=True)
    images = (w.sum(1) @ a).reshape(n, 3, side, side)
    mean_before = torch.tensor(0.7)
    state = torch.get_rng_state()
    penalty, mean_after = g_path_length_penalty(images, w, mean_before)
    torch.set_rng_state(state)
    y = torch.randn(n, 3, side, side) / math.sqrt(side * side)
    jt_y = (y.reshape(n, -1) @ a.T)[:, None, :].expand(n, layers, dim)  # same for every layer
    lengths = jt_y.pow(2).sum(2).mean(1).sqrt()
    expected_mean = 0.7 + 0.01 * (lengths.mean() - 0.7)
    assert mean_after.item() == pytest.approx(expected_mean.item(), rel=1e-5)
    assert penalty.item() == pytest.approx((lengths - expected_mean).pow(2).mean().item(),
                                           rel=1e-4)


def path_length_gradients(weight: float, every: int) -> dict[str, torch.Tensor]:
    """G's gradients in the path-length step of iteration 0 (lr 0: the main step moves
    nothing, so every setting sees the same weights and draws)."""
    torch.manual_seed(3)
    g, d = Generator(16, 16, 1, channels=CH), Discriminator(16, channels=CH)
    loop = LoopSpec(batch=4, lr=0.0, r1_gamma=0.0, path_regularize=weight, path_every=every,
                    path_batch_shrink=2, mixing=0.0)
    method = FixedLatents(MethodContext(g=g, d=d), [torch.randn(4, 16), torch.randn(4, 16)])
    step = GANStep(g, d, copy.deepcopy(g), method, loop)
    step.mean_path_length = torch.tensor(0.5)  # a non-zero running mean: a non-zero penalty
    log = []
    spy_steps(step.g_opt, g, log)
    step(0, torch.rand(4, 3, 16, 16))
    assert len(log) == 2  # the main G step, then the path-length step
    return log[1][1]


def test_path_length_step_is_scaled_by_its_weight_times_its_lazy_interval():
    once = path_length_gradients(1.0, every=1)
    assert any(v.abs().sum() > 0 for v in once.values())
    for weight, every in ((2.0, 1), (1.0, 4)):
        scaled = path_length_gradients(weight, every)
        for name in once:
            torch.testing.assert_close(scaled[name], weight * every * once[name], rtol=1e-4,
                                       atol=1e-9)


class ScaledOutput(torch.nn.Module):
    """An extra generator module: one trainable factor on the image."""

    def __init__(self):
        super().__init__()
        self.factor = torch.nn.Parameter(torch.ones(()))


class Hooked(FixedLatents):
    """Uses the general hooks: an extra G module in `generate`, a gradient mask on G's constant
    input in every G phase, and a record of the optimiser steps the hooks saw."""

    def build(self) -> None:
        self.scale = ScaledOutput()
        self.seen: list[str] = []

    def extra_g_modules(self):
        return [self.scale]

    def generate(self, g, modules, styles, **kwargs):
        img, rest = g(styles, **kwargs)
        return img * modules[0].factor, rest

    def before_optimizer_step(self, step, which):
        self.seen.append(which)
        if which == "g":
            self.ctx.g.input.input.grad = None


def test_general_hooks_mask_gradients_train_extra_modules_and_average_them():
    torch.manual_seed(4)
    g, d = FixedNoiseGenerator(16, 16, 1, channels=CH), Discriminator(16, channels=CH)
    loop = LoopSpec(batch=2, r1_gamma=1.0, r1_every=1, path_regularize=1.0, path_every=1,
                    mixing=0.0, ema_decay=0.5)
    method = Hooked(MethodContext(g=g, d=d), [torch.randn(2, 16)] * 2)
    method.build()
    method.ema_g_modules = [copy.deepcopy(method.scale).requires_grad_(False)]
    step = GANStep(g, d, copy.deepcopy(g), method, loop)
    constant = g.input.input.detach().clone()
    step(0, torch.rand(2, 3, 16, 16))
    assert method.seen == ["d", "d", "g", "g"]  # D main, R1, G main, path length
    assert torch.equal(g.input.input, constant)  # masked in both G phases
    assert g.input.input not in step.g_opt.state  # and its Adam state never created
    assert method.scale.factor.item() != 1.0  # the extra module trained with G's optimiser
    expected = 0.5 * 1.0 + 0.5 * method.scale.factor.item()
    assert method.ema_g_modules[0].factor.item() == pytest.approx(expected)


class Reconstruct(Method):
    """A method without a discriminator: fits G's image of one latent to a target."""

    adversarial = False

    def g_extra_losses(self, step, fake):
        assert fake is None
        img, _ = self.generate(self.ctx.g, [], [torch.ones(1, 16)], randomize_noise=False)
        return {"fit": (img - step.real[:1]).pow(2).mean()}


def test_a_method_without_adversarial_terms_never_touches_d():
    torch.manual_seed(5)
    g, d = Generator(16, 16, 1, channels=CH), Discriminator(16, channels=CH)
    d_before = copy.deepcopy(d.state_dict())
    loop = LoopSpec(batch=2, r1_gamma=1.0, r1_every=1, path_regularize=1.0, path_every=1)
    step = GANStep(g, d, copy.deepcopy(g), Reconstruct(Method.Params(), MethodContext(g, d)), loop)
    real = torch.rand(2, 3, 16, 16)
    first = step(0, real)
    for i in range(1, 4):
        last = step(i, real)
    assert set(first) == {"loss_fit"}  # no d_adv, r1, g_adv or path length
    assert last["loss_fit"] < first["loss_fit"]
    assert not step.d_opt.state
    for name, value in d.state_dict().items():
        assert torch.equal(value, d_before[name]), name


class Staged(FixedLatents):
    """Two stages, as separate trainings: G fixed in the first (iteration 0), then trained."""

    stages_restart_optimizers = True

    def stages(self):
        return [("first", 0), ("second", 1)]

    def trains_generator(self, iteration):
        return iteration >= 1


class StagedBothTrained(Staged):
    def trains_generator(self, iteration):
        return True


def test_the_path_length_mean_restarts_with_the_optimisers():
    """A stage run as a separate training starts its path-length mean at 0, as its script."""
    torch.manual_seed(6)
    g, d = FixedNoiseGenerator(16, 16, 1, channels=CH), Discriminator(16, channels=CH)
    loop = LoopSpec(batch=2, r1_gamma=0.0, path_regularize=1.0, path_every=1, mixing=0.0)
    method = StagedBothTrained(MethodContext(g=g, d=d), [torch.randn(2, 16) for _ in range(4)])
    step = GANStep(g, d, copy.deepcopy(g), method, loop)
    step.mean_path_length = torch.tensor(5.0)  # as carried from a long first stage
    step(0, torch.rand(2, 3, 16, 16))  # the last step of "first": the mean is restarted after it
    assert step.mean_path_length.item() == 0.0
    step(1, torch.rand(2, 3, 16, 16))  # within a stage, the mean accumulates again
    assert step.mean_path_length.item() > 0.0


def test_a_stage_with_g_fixed_and_fresh_optimisers_at_the_stage_change():
    torch.manual_seed(6)
    g, d = FixedNoiseGenerator(16, 16, 1, channels=CH), Discriminator(16, channels=CH)
    loop = LoopSpec(batch=2, r1_gamma=0.0, path_regularize=1.0, path_every=1, mixing=0.0)
    step = GANStep(g, d, copy.deepcopy(g), Staged(MethodContext(g=g, d=d),
                                                  [torch.randn(2, 16) for _ in range(4)]), loop)
    g_before, d_before = snapshot(g), snapshot(d)
    logged = step(0, torch.rand(2, 3, 16, 16))
    assert "loss_g_adv" in logged and "loss_path_length" not in logged  # logged, not trained
    assert all(torch.equal(p, g_before[n]) for n, p in g.named_parameters())
    assert step.mean_path_length.item() == 0.0  # no path length while G is fixed
    assert not torch.equal(d.final_linear[-1].weight, d_before["final_linear.1.weight"])
    assert not step.g_opt.state and not step.d_opt.state  # D's state cleared at the change
    step(1, torch.rand(2, 3, 16, 16))
    assert {int(s["step"]) for s in step.d_opt.state.values()} == {1}  # one step, fresh
    assert {int(s["step"]) for s in step.g_opt.state.values()} == {2}  # main + path length
    assert step.mean_path_length.item() > 0.0


class HalvedLater(FixedLatents):
    def lr_factor(self, iteration):
        return 0.5 if iteration >= 1 else 1.0


def test_lr_factor_scales_both_optimisers_from_the_configured_rate():
    torch.manual_seed(7)
    g, d = FixedNoiseGenerator(16, 16, 1, channels=CH), Discriminator(16, channels=CH)
    loop = LoopSpec(batch=2, lr=0.01, r1_gamma=1.0, r1_every=4, path_regularize=0.0, mixing=0.0)
    method = HalvedLater(MethodContext(g=g, d=d), [torch.randn(2, 16) for _ in range(6)])
    step = GANStep(g, d, copy.deepcopy(g), method, loop)
    lrs = []
    for it in range(3):
        step(it, torch.rand(2, 3, 16, 16))
        lrs += [step.g_opt.param_groups[0]["lr"], step.d_opt.param_groups[0]["lr"]]
    d_lr = 0.01 * 4 / 5  # lazy R1 every 4: lr x 4 / (4 + 1); G has no lazy term
    assert lrs == pytest.approx([0.01, d_lr, 0.005, d_lr / 2, 0.005, d_lr / 2], rel=1e-12)
