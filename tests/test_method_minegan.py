"""MineGAN on tiny networks: the miners' maths written out from the authors' layers, how samples
are drawn through them, and the mine stage leaving G (and g_ema, and G's Adam state) untouched
while the miners and D train."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
from _fast_loop import RecordingTracker, install
from _tiny_world import tiny_spec
from torch import nn

from adaptscope import load_trajectories
from adaptscope.embedded import toyfaces
from adaptscope.errors import ConfigError
from adaptscope.images import to_uint8
from adaptscope.methods import MethodContext, get_method
from adaptscope.methods.base import AdaptedGenerator
from adaptscope.methods.minegan import MineGAN
from adaptscope.models import Discriminator, FixedLatents, Generator
from adaptscope.spec import LoopSpec, MetricsSpec, ScheduleSpec
from adaptscope.track.evaluate import EVAL_SEED_OFFSET, Evaluator
from adaptscope.track.target import TargetData
from adaptscope.train.loop import run_adaptation
from adaptscope.train.step import GANStep

CH = {4: 16, 8: 16, 16: 8}
DIM = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def context() -> MethodContext:
    torch.manual_seed(0)
    g, d = Generator(16, DIM, 2, channels=CH), Discriminator(16, channels=CH)
    frozen = copy.deepcopy(g).eval().requires_grad_(False)
    return MethodContext(g=g, d=d, g_ema=copy.deepcopy(frozen), g_source=frozen,
                         d_source=copy.deepcopy(d).requires_grad_(False),
                         shots=torch.rand(10, 3, 16, 16) * 2 - 1, mixing=0.5)


def build(ctx: MethodContext, **params):
    """The method as the loop sets it up: build, moving averages of its G modules, setup."""
    cls = get_method("minegan")
    method = cls(cls.Params(**params), ctx)
    method.build()
    method.ema_g_modules = [copy.deepcopy(m).eval().requires_grad_(False)
                            for m in method.extra_g_modules()]
    method.setup()
    return method


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def unchanged(module: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(p, before[n]) for n, p in module.named_parameters())


def lrelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    y = x + bias.view(1, -1, 1, 1)
    return torch.where(y >= 0, y, 0.2 * y) * math.sqrt(2)


def conv1x1(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """An equalised 1x1 convolution: weights scaled by 1 / sqrt(fan-in), no bias."""
    return torch.einsum("oi,bihw->bohw", weight[:, :, 0, 0] / math.sqrt(weight.shape[1]), x)


def test_registered_and_settings_checked():
    cls = get_method("minegan")
    assert cls.name == "minegan"
    with pytest.raises(ConfigError, match="minegan.miner_iterations"):
        cls.Params(miner_iterations=-1)


def test_miner_is_a_two_layer_relu_mlp_from_z_to_z_without_residual():
    miner = build(context()).extra_g_modules()[0]
    first, second = [m for m in miner.modules() if isinstance(m, nn.Linear)]
    assert first.weight.shape == second.weight.shape == (DIM, DIM)
    z = torch.randn(5, DIM)
    expected = (z @ first.weight.T + first.bias).clamp(min=0) @ second.weight.T + second.bias
    torch.testing.assert_close(miner(z), expected)
    # PyTorch's default Linear initialisation (the code's): uniform within 1/sqrt(d), so the
    # miner starts as a random map, not the identity.
    for layer in (first, second):
        assert layer.weight.abs().max() <= 1 / math.sqrt(DIM)
        assert layer.bias.abs().max() <= 1 / math.sqrt(DIM)
    assert not torch.allclose(miner(z), z, atol=0.1)


def test_input_miner_makes_g_input_from_an_8_channel_constant():
    mod = build(context(), input_miner=True).extra_g_modules()[1]
    p = dict(mod.named_parameters())
    assert p["input"].shape == (1, 8, 4, 4)
    h = lrelu(conv1x1(p["input"], p["conv1.weight"]), p["act1.bias"])
    h = lrelu(conv1x1(h, p["conv2.weight"]), p["act2.bias"])
    expected = conv1x1(h, p["conv3.weight"])
    assert expected.shape == (1, CH[4], 4, 4)
    torch.testing.assert_close(mod(3), expected.expand(3, -1, -1, -1))


@pytest.mark.parametrize("input_miner", [True, False])
def test_generate_feeds_g_the_mined_z_and_the_mined_input(input_miner):
    ctx = context()
    method = build(ctx, input_miner=input_miner)
    g, modules = ctx.g, method.extra_g_modules()
    z1, z2 = torch.randn(3, DIM), torch.randn(3, DIM)
    noise = g.make_noise(3)
    image, _ = method.generate(g, modules, [z1, z2], noise=noise, inject_index=2)
    # the reference: a copy of G whose 4x4 constant is the input miner's output
    expected_g = copy.deepcopy(g)
    if input_miner:
        with torch.no_grad():
            expected_g.input.input.copy_(modules[1](1))
    expected, _ = expected_g([modules[0](z1), modules[0](z2)], noise=noise, inject_index=2)
    torch.testing.assert_close(image, expected)
    plain, _ = g([z1, z2], noise=noise, inject_index=2)
    assert not torch.allclose(image, plain)
    assert not g.input._forward_hooks  # G is left as it was found


def test_generate_passes_w_latents_to_g_unchanged():
    ctx = context()
    method = build(ctx)
    g, miner = ctx.g, method.extra_g_modules()[0]
    calls, seen = [], []
    miner.register_forward_hook(lambda *_: calls.append(1))
    g.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    w = g.style(torch.randn(2, DIM))
    w_before = w.detach().clone()
    method.generate(g, method.extra_g_modules(), [w], input_is_latent=True)
    assert calls == [] and seen[0][0] is w and torch.equal(w, w_before)


@pytest.mark.parametrize("live", [True, False])
def test_evaluation_samples_through_live_miners_or_their_averages(live):
    ctx = context()
    method = build(ctx, eval_live_miners=live, input_miner=False)
    with torch.no_grad():  # make the moving average differ from the live miner
        for p in method.ema_g_modules[0].parameters():
            p.add_(0.5)
    z = torch.randn(3, DIM)
    noise = ctx.g_ema.make_noise(3)
    with torch.no_grad():
        image, _ = AdaptedGenerator(method, ctx.g_ema)([z], noise=noise)
        used = method.extra_g_modules()[0] if live else method.ema_g_modules[0]
        expected, _ = ctx.g_ema([used(z)], noise=noise)
    torch.testing.assert_close(image, expected)


def test_a_rows_samples_are_g_ema_through_the_live_miners(source_checkpoint, tmp_path,
                                                         monkeypatch):
    """What the loop hands evaluation, measured by the real evaluator: its first samples are
    G_ema fed the live miner's z, with the input miner's constant as its 4x4 input, computed
    here on a copy of G_ema from the same fixed latents."""
    install(monkeypatch)
    methods = []
    build_method = MineGAN.build
    monkeypatch.setattr(MineGAN, "build", lambda self: (methods.append(self), build_method(self)))
    images = toyfaces.render_tensor("sunglasses", range(16), 16)
    metrics = MetricsSpec(fid_backbone="toy", fid_n_gen=8, lpips_backbone="toy",
                          lpips_n_samples=8, realism="none", ground_truth=False, n_grid=4,
                          batch_size=4)
    evaluator = Evaluator(metrics, TargetData(images, images[:10], "16 images"), seed=0)
    grids = {}

    def record(self, iteration, images_seen, wall_time_s, sampled, training=None):
        if iteration == 2:  # after the miners and G have trained
            grids[iteration] = evaluator.evaluate(sampled).grid

    monkeypatch.setattr(RecordingTracker, "record", record)
    spec = tiny_spec(source_checkpoint, "minegan", method_params={"miner_iterations": 1,
                                                                  "input_miner": True},
                     schedule=ScheduleSpec(iterations=2, eval_every=2))
    run_adaptation(replace(spec, train=replace(spec.train, lr=0.02)), tmp_path / "run")
    method = methods[0]
    g_ema = method.ctx.g_ema
    z, noise = FixedLatents(g_ema, EVAL_SEED_OFFSET).draw(4)  # the evaluator's first four

    def sampled_by_hand(g: Generator, miner: nn.Module, input_miner: nn.Module) -> torch.Tensor:
        g = copy.deepcopy(g)
        with torch.no_grad():
            g.input.input.copy_(input_miner(1))
            return torch.from_numpy(to_uint8(g([miner(z)], noise=noise)[0])).int()

    grid = torch.from_numpy(grids[2]).int()
    expected = sampled_by_hand(g_ema, *method.extra_g_modules())
    assert (grid - expected).abs().max() <= 1  # 8-bit rounding of equal images
    for other in (sampled_by_hand(g_ema, *method.ema_g_modules),  # the miners' averages
                  sampled_by_hand(method.ctx.g, *method.extra_g_modules())):  # G, not G_ema
        assert (grid - other).abs().max() > 1


def test_mine_stage_leaves_g_untouched_then_joint_stage_trains_it():
    ctx = context()
    method = build(ctx, miner_iterations=2)
    loop = LoopSpec(batch=2, r1_gamma=0.1, r1_every=1, path_regularize=2.0, path_every=1,
                    mixing=0.5)
    step = GANStep(ctx.g, ctx.d, ctx.g_ema, method, loop)
    source, d_before = snapshot(ctx.g), snapshot(ctx.d)
    miners_before = [snapshot(m) for m in method.extra_g_modules()]
    real = torch.rand(2, 3, 16, 16) * 2 - 1
    for iteration in (0, 1):  # every phase: D, R1, G, path length
        assert method.stage(iteration) == "mine"
        step(iteration, real)
    assert unchanged(ctx.g, source) and unchanged(ctx.g_ema, source)
    assert not any(p in step.g_opt.state for p in ctx.g.parameters())  # no Adam state for G
    for module, before in zip(method.extra_g_modules(), miners_before, strict=True):
        assert all(not torch.equal(p, before[n]) for n, p in module.named_parameters())
        assert all(p in step.g_opt.state for p in module.parameters())
    assert not unchanged(ctx.d, d_before)  # D trains in the mine stage

    for iteration in (2, 3):
        assert method.stage(iteration) == "joint"
        step(iteration, real)
    assert not unchanged(ctx.g, source) and not unchanged(ctx.g_ema, source)
    assert any(p in step.g_opt.state for p in ctx.g.parameters())


def test_stage_switches_after_miner_iterations():
    method = build(context(), miner_iterations=3)
    assert [method.stage(i) for i in range(5)] == ["mine"] * 3 + ["joint"] * 2
    assert build(context(), miner_iterations=0).stage(0) == "joint"


@pytest.mark.slow
def test_a_run_records_the_stage_of_each_row(source_checkpoint, tmp_path):
    spec = tiny_spec(source_checkpoint, "minegan")  # miner_iterations 3, rows at 0, 2, 4
    df = load_trajectories(run_adaptation(spec, tmp_path / "run"))
    assert df["stage"].tolist() == ["mine", "mine", "joint"]
