"""BSA: only scales, shifts and codes change; the identity affine is the source generator; the
reconstruction improves; its loss terms, its regularisers and the differentiable LPIPS on known
answers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from _tiny_world import CH as TINY_CH
from _tiny_world import tiny_spec

from adaptscope.embedded.toynet import load_toynet
from adaptscope.errors import ConfigError
from adaptscope.methods import MethodContext, get_method
from adaptscope.methods.bsa import BSAStats, emd, stats_regulariser
from adaptscope.metrics.lpips_embed import LPIPSEmbedder, cross_distances, lpips_pair_distances
from adaptscope.models import Discriminator, Generator, load_checkpoint
from adaptscope.spec import LoopSpec, ScheduleSpec
from adaptscope.train.step import GANStep

CH = {4: 16, 8: 16, 16: 8}


def fresh_bsa(**params):
    """A BSA method as the loop prepares a fresh run, on a 16 px generator and 10 shots."""
    torch.manual_seed(0)
    g, d = Generator(16, 32, 2, channels=CH), Discriminator(16, channels=CH)
    for p in g.parameters():  # a source whose noise and biases are not all zero
        p.data.add_(0.1 * torch.randn_like(p))
    ctx = MethodContext(g=g, d=d, g_ema=copy.deepcopy(g), g_source=copy.deepcopy(g),
                        d_source=copy.deepcopy(d), shots=torch.rand(10, 3, 16, 16) * 2 - 1,
                        perceptual=load_toynet())
    cls = get_method("bsa")
    method = cls(cls.Params(**params), ctx)
    method.build()
    method.ema_g_modules = [copy.deepcopy(m).requires_grad_(False)
                            for m in method.extra_g_modules()]
    method.setup()
    for ema, module in zip(method.ema_g_modules, method.extra_g_modules(), strict=True):
        ema.load_state_dict(module.state_dict())  # as the loop does after `setup()`
    return method


def gan_step(method, lr: float = 0.03) -> GANStep:
    ctx = method.ctx  # R1 and path length switched on: the non-adversarial path must skip them
    loop = LoopSpec(batch=4, lr=lr, r1_gamma=10.0, r1_every=1, path_regularize=2.0, path_every=1)
    return GANStep(ctx.g, ctx.d, ctx.g_ema, method, loop)


def tensors(*modules) -> list[torch.Tensor]:
    return [t.detach().clone() for m in modules for t in [*m.parameters(), *m.buffers()]]


def test_training_changes_only_the_scales_shifts_and_codes():
    method = fresh_bsa()
    ctx = method.ctx
    frozen = tensors(ctx.g, ctx.d, ctx.g_ema)
    before = {k: v.clone() for m in method.extra_g_modules() for k, v in m.named_parameters()}
    step = gan_step(method)
    for it in range(3):
        logged = step(it, ctx.shots[:4])
    assert set(logged) == {"loss_bsa_pixel", "loss_bsa_perceptual", "loss_bsa_emd",
                           "loss_bsa_stats"}  # no d_adv, r1, g_adv or path_length
    for a, b in zip(frozen, tensors(ctx.g, ctx.d, ctx.g_ema), strict=True):
        assert torch.equal(a, b)
    assert step.d_opt.state_dict()["state"] == {}  # D's optimiser never stepped
    after = {k: v for m in method.extra_g_modules() for k, v in m.named_parameters()}
    assert len(after) == 2 * 6 + 1  # input, conv1 and 4 convs at 16 px, each twice; codes
    for key, value in after.items():
        assert not torch.equal(value, before[key]), key
    assert all(not any(m._forward_hooks.values()) for m in ctx.g.modules())  # hooks removed


def test_unit_scale_and_zero_shift_give_the_source_image_exactly():
    method = fresh_bsa()
    g, modules = method.ctx.g, method.extra_g_modules()
    w, noise = torch.randn(3, g.style_dim), g.make_noise(3)
    out, _ = method.generate(g, modules, [w], input_is_latent=True, noise=noise)
    ref, _ = g([w], input_is_latent=True, noise=noise)
    assert torch.equal(out, ref)


def test_scale_and_shift_act_on_the_modulated_conv_output_before_noise_and_activation():
    method = fresh_bsa()
    g, modules = method.ctx.g, method.extra_g_modules()
    stats = method.stats
    with torch.no_grad():
        stats.scales[1].fill_(1.5)  # conv1
        stats.shifts[1].copy_(torch.linspace(-0.5, 0.5, stats.shifts[1].numel()))
    w, noise = torch.randn(2, g.style_dim), g.make_noise(2)
    _, _, feats = method.generate(g, modules, [w], input_is_latent=True, noise=noise,
                                  return_features=True)
    conv = g.conv1.conv(g.input(2), w)  # by hand, from the generator's own layers
    expected = g.conv1.activate(g.conv1.noise(
        conv * 1.5 + stats.shifts[1].view(1, -1, 1, 1), noise=noise[0]))
    torch.testing.assert_close(feats[0], expected, rtol=0, atol=1e-6)
    ref, _ = g([w], input_is_latent=True, noise=noise)
    assert not torch.equal(method.generate(g, modules, [w], input_is_latent=True,
                                           noise=noise)[0], ref)
    assert torch.equal(g([w], input_is_latent=True, noise=noise)[0], ref)  # G itself unchanged


def test_evaluation_latents_are_drawn_from_the_tempered_prior():
    method = fresh_bsa(temperature=0.5)
    g, codes = method.ctx.g, method.codes
    z, noise = torch.randn(4, g.style_dim), g.make_noise(4)
    out, _ = method.generate(g, method.ema_g_modules, [z], noise=noise)
    w = g.style(z)
    ref, _ = g([codes.w_mean + 0.5 * (w - codes.w_mean)], input_is_latent=True, noise=noise)
    torch.testing.assert_close(out, ref)
    # the standardisation is the source mapping's mean and std
    w_many = g.style(torch.randn(4096, g.style_dim))
    torch.testing.assert_close(codes.w_mean, w_many.mean(0), atol=0.05, rtol=0)


def test_reconstruction_of_the_shots_improves_over_a_few_steps():
    method = fresh_bsa(code_jitter=0.0)
    ctx = method.ctx
    noise = ctx.g.make_noise(10)

    def recon_error() -> float:
        with torch.no_grad():
            img, _ = method.generate(ctx.g, method.extra_g_modules(),
                                     [method.codes.to_w(method.codes.codes)],
                                     input_is_latent=True, noise=noise)
        return (img - ctx.shots).abs().mean().item()

    start = recon_error()
    step = gan_step(method)
    for it in range(6):
        step(it, ctx.shots[:4])
    assert recon_error() < 0.85 * start


def test_loss_terms_are_the_weighted_definitions_replayed_by_hand():
    """Each term from its definition, with the same draws (the codes' jitter, the noise maps, the
    prior's latents): weight x mean |G(w) - shot|, weight x the toy net's mean LPIPS, weight x
    (mean nearest-code + mean nearest-sample squared distance) to the standardised source W
    prior, weight x sum over layers of mean (scale - 1)^2 + mean shift^2; G(w) with each
    channel's scale and shift on the constant input and on every modulated conv's output."""
    method = fresh_bsa(pixel_weight=2.0, perceptual_weight=3.0, emd_weight=0.5, emd_samples=2,
                       stats_weight=0.7, code_jitter=0.05)
    g, shots, codes, stats = method.ctx.g, method.ctx.shots, method.codes, method.stats
    with torch.no_grad():  # statistics and codes away from their start
        for t in [*stats.scales, *stats.shifts, codes.codes]:
            t.add_(0.2 * torch.randn_like(t))
    torch.manual_seed(5)
    losses = method.g_extra_losses(None, None)
    torch.manual_seed(5)

    with torch.no_grad():
        c = codes.codes.detach()
        jitter = 0.05 * torch.randn(c.shape)
        noise = g.make_noise(len(c))
        w = codes.w_mean + codes.w_std * (c + jitter)  # a code is standardised W
        targets = [g.input, g.conv1.conv, *[layer.conv for layer in g.convs]]
        hooks = [m.register_forward_hook(
            lambda _m, _i, out, s=s, b=b: out * s[None, :, None, None] + b[None, :, None, None])
            for m, s, b in zip(targets, stats.scales, stats.shifts, strict=True)]
        try:
            img, _ = g([w], input_is_latent=True, noise=noise)
        finally:
            for h in hooks:
                h.remove()
        plain, _ = g([w], input_is_latent=True, noise=noise)
        prior_w = g.style(torch.randn(2 * len(c), g.style_dim))
        prior = (prior_w - codes.w_mean) / codes.w_std
        sq = torch.tensor([[float(((a - b) ** 2).sum()) for b in prior] for a in c])
        emd_by_hand = sq.min(0).values.mean() + sq.min(1).values.mean()
        reg = sum(float(((s - 1) ** 2).mean() + (b ** 2).mean())
                  for s, b in zip(stats.scales, stats.shifts, strict=True))
        expected = {"bsa_pixel": 2.0 * float((img - shots).abs().mean()),
                    "bsa_perceptual": 3.0 * float(method.ctx.perceptual.lpips_distance(
                        img, shots).mean()),
                    "bsa_emd": 0.5 * float(emd_by_hand), "bsa_stats": 0.7 * reg}
    assert losses.keys() == expected.keys()
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-4), key
    assert reg > 0 and float((img - plain).abs().max()) > 0  # the statistics act


def test_emd_on_known_codes_and_samples():
    codes = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    samples = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    # squared distances: code 0 -> 1, 4, 10; code 1 -> 4, 13, 1
    nearest_code = (1 + 4 + 1) / 3  # per sample: min(1, 4), min(4, 13), min(10, 1)
    nearest_sample = (1 + 1) / 2  # per code
    assert emd(codes, samples).item() == pytest.approx(nearest_code + nearest_sample)


def test_stats_regulariser_on_known_scales_and_shifts():
    stats = BSAStats([2, 3])
    with torch.no_grad():
        stats.scales[0].copy_(torch.tensor([1.0, 3.0]))
        stats.shifts[1].copy_(torch.tensor([1.0, -1.0, 2.0]))
    # layer 0: mean(0, 4) + 0; layer 1: 0 + mean(1, 1, 4)
    assert stats_regulariser(stats).item() == pytest.approx(2.0 + 2.0)


def test_differentiable_lpips_matches_the_embedding_path_and_the_toy_net():
    net = load_toynet()
    torch.manual_seed(1)
    x, y = torch.rand(5, 3, 16, 16) * 2 - 1, torch.rand(5, 3, 16, 16) * 2 - 1
    x.requires_grad_(True)
    dist = lpips_pair_distances(net, x, y)
    emb = LPIPSEmbedder(net, quantize=False)
    reference = cross_distances(emb.embed(x.detach()), emb.embed(y)).diagonal()
    torch.testing.assert_close(dist.double(), reference, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(dist, net.lpips_distance(x.detach(), y), rtol=1e-5, atol=1e-7)
    dist.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert lpips_pair_distances(net, y, y).abs().max().item() < 1e-10


def test_learning_rate_drops_by_the_scale_every_interval():
    # updater.py shifts before the update of iteration i when (i + 1) % interval == 0
    bsa = get_method("bsa")
    method = bsa(bsa.Params(lr_shift_every=3000, lr_shift_scale=0.2), MethodContext(None, None))
    factors = [method.lr_factor(i) for i in (0, 2998, 2999, 5998, 5999)]
    assert factors == pytest.approx([1.0, 1.0, 0.2, 0.2, 0.04], rel=1e-12)
    never = bsa(bsa.Params(lr_shift_every=0), MethodContext(None, None))
    assert never.lr_factor(10**6) == 1.0


@pytest.mark.parametrize("key,value", [("perceptual_weight", -1.0), ("temperature", -0.1),
                                       ("emd_samples", 0), ("n_w_stats", 1),
                                       ("lr_shift_every", -1), ("lr_shift_scale", 0.0)])
def test_bad_settings_fail_when_the_parameters_are_built(key, value):
    with pytest.raises(ConfigError, match=f"bsa.{key}"):
        get_method("bsa").Params(**{key: value})


def test_missing_perceptual_network_is_named():
    method = fresh_bsa()
    method.ctx.perceptual = None
    with pytest.raises(ConfigError, match="LPIPS network"):
        method.g_extra_losses(None, None)


@pytest.mark.slow  # an end-to-end run with its evaluations
def test_a_run_keeps_g_and_d_and_records_no_adversarial_terms(source_checkpoint, tmp_path):
    from adaptscope import load_trajectories
    from adaptscope.train.loop import run_adaptation

    spec = tiny_spec(source_checkpoint, "bsa", schedule=ScheduleSpec(iterations=2, eval_every=2))
    run_dir = run_adaptation(spec, tmp_path / "run")
    df = load_trajectories(run_dir)
    losses = {c for c in df.columns if c.startswith("loss_")}
    assert {"loss_bsa_pixel", "loss_bsa_perceptual", "loss_bsa_emd", "loss_bsa_stats"} <= losses
    assert not losses & {"loss_d_adv", "loss_r1", "loss_g_adv", "loss_path_length"}
    assert math.isfinite(df["loss_bsa_pixel"].iloc[-1])
    source, adapted = load_checkpoint(source_checkpoint), load_checkpoint(
        run_dir / "checkpoints" / "latest.pt")
    for net in ("g", "d", "g_ema"):
        for a, b in zip(getattr(source, net).state_dict().values(),
                        getattr(adapted, net).state_dict().values(), strict=True):
            assert torch.equal(a, b), net
    state = adapted.extra["method"]
    assert not torch.equal(state["g_module0"]["scales.0"], torch.ones(TINY_CH[4]))
