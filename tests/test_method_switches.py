"""Switches between a method's paper form and its authors' code: AdAM's conv view and style scale,
BSA's sampling psi and perceptual loss. Each test fails when its switch does nothing: the
expectation under the non-default setting is written out from the code's formula, never with
the code under test."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from adaptscope.embedded.toynet import load_toynet
from adaptscope.errors import ConfigError
from adaptscope.methods import MethodContext, get_method
from adaptscope.methods import bsa as bsa_module
from adaptscope.models import Discriminator, Generator
from adaptscope.models.layers import EqualLinear

CH = {4: 16, 8: 16, 16: 8}  # style_dim 32: style linears into 16 and 8 channels

pytestmark = pytest.mark.usefixtures("one_thread")


def context(perceptual: torch.nn.Module | None = None) -> MethodContext:
    """A 16 px G and D, the same for every call, and 10 shots."""
    torch.manual_seed(0)
    g, d = Generator(16, 32, 2, channels=CH), Discriminator(16, channels=CH)
    for p in g.parameters():  # a source whose noise and biases are not all zero
        p.data.add_(0.1 * torch.randn_like(p))
    return MethodContext(g=g, d=d, g_ema=copy.deepcopy(g), g_source=copy.deepcopy(g),
                         d_source=copy.deepcopy(d), shots=torch.rand(10, 3, 16, 16) * 2 - 1,
                         perceptual=perceptual)


def adam(**params):
    cls = get_method("adam")
    method = cls(cls.Params(**params), context())
    method.build()
    return method


# --- AdAM: conv_view ---------------------------------------------------------------------------


def set_known(mod, name: str, n_u: int, n_v: int) -> None:
    with torch.no_grad():
        mod.u[name.replace(".", ":")].copy_(torch.linspace(-1.0, 1.0, n_u))
        mod.v[name.replace(".", ":")].copy_(torch.linspace(0.5, 2.0, n_v))


@pytest.mark.parametrize("which,name", [("g", "convs.2.conv.weight"),
                                        ("d", "convs.1.conv2.1.weight")])
def test_adam_reference_conv_view_is_the_codes_ger_u_v_viewed_as_the_kernel(which, name):
    """model_adam.py:207,458: ger(u, v).view(out, in, k, k): entry (o, i, a, c), flat index f
    in (out, in, k, k) order, reads the (in*k*k, out) product at row f // out, column f % out."""
    method = adam(conv_view="reference")
    net = method.ctx.g if which == "g" else method.ctx.d
    mod = method.mods[which][0]
    w = dict(net.named_parameters())[name]
    kernel = w[0] if w.dim() == 5 else w
    n_out, n_in, k, _ = kernel.shape
    set_known(mod, name, n_in * k * k, n_out)
    u, v = mod.u[name.replace(".", ":")], mod.v[name.replace(".", ":")]
    expected = torch.empty_like(kernel)
    for o in range(n_out):
        for i in range(n_in):
            for a in range(k):
                for c in range(k):
                    f = ((o * n_in + i) * k + a) * k + c
                    expected[o, i, a, c] = kernel[o, i, a, c] * (1 + u[f // n_out] * v[f % n_out])
    out = mod.overrides(net)[name]
    torch.testing.assert_close(out.reshape(kernel.shape), expected)


def test_adam_conv_view_decides_whether_kept_units_modulate_whole_filters():
    """With half the units' v zeroed (the unimportant ones), "filters" modulates exactly the
    kept filters and "reference" part of every filter; linear kernels are the same in both."""
    name, linear = "convs.2.conv.weight", "convs.2.conv.modulation.weight"
    changed = {}
    for view in ("filters", "reference"):
        method = adam(conv_view=view)
        g, mod = method.ctx.g, method.mods["g"][0]
        w = dict(g.named_parameters())[name][0]
        set_known(mod, name, w[0].numel(), w.shape[0])
        set_known(mod, linear, 32, 16)
        with torch.no_grad():
            mod.v[name.replace(".", ":")][w.shape[0] // 2:] = 0  # filters 4-7 unimportant
        out = mod.overrides(g)
        changed[view] = (out[name][0] != w).flatten(1)  # (filter, entry): modulated
        changed[view + " linear"] = out[linear]
    half = changed["filters"].shape[0] // 2
    assert changed["filters"][:half].all() and not changed["filters"][half:].any()
    per_filter = changed["reference"].float().mean(1)
    assert ((per_filter > 0.3) & (per_filter < 0.7)).all(), per_filter
    assert torch.equal(changed["filters linear"], changed["reference linear"])


# --- AdAM: style_scale -------------------------------------------------------------------------


def test_adam_style_scale_source_starts_at_the_source_and_reference_at_the_codes_kml_fc():
    """KML_fc computes W s / sqrt(C) + b (model_adam.py:28,46) for a style linear into C
    channels, where EqualLinear has W s / sqrt(style_dim) + b: x sqrt(2) into 16 channels and x 2
    into 8 here, as at the 128 and 256 px layers of a 512-wide generator."""
    z = torch.randn(3, 32)
    source = adam(style_scale="source")
    g = source.ctx.g
    noise = g.make_noise(3)
    plain, _ = g([z], noise=noise)
    img, _ = source.generate(g, source.mods["g"], [z], noise=noise)  # modulations at init
    assert torch.equal(img, plain)

    reference = adam(style_scale="reference")
    g = reference.ctx.g
    out = reference.mods["g"][0].overrides(g)
    w = g.style(z)
    for layer, factor in ((g.conv1.conv, math.sqrt(2)), (g.convs[3].conv, 2.0)):
        lin = layer.modulation
        name = next(n for n, p in g.named_parameters() if p is lin.weight)
        s = F.linear(w, out[name] * lin.scale, lin.bias * lin.lr_mul)  # as EqualLinear runs
        by_formula = F.linear(w, lin.weight / math.sqrt(layer.in_channels)) + lin.bias
        torch.testing.assert_close(s, by_formula)
        torch.testing.assert_close(s - lin.bias, factor * (lin(w) - lin.bias))

    code = copy.deepcopy(g)  # the code's generator at iteration 0: every linear as KML_fc
    for m in code.modules():
        if isinstance(m, EqualLinear):
            m.scale = m.lr_mul / math.sqrt(m.weight.shape[0])
    img, _ = reference.generate(g, reference.mods["g"], [z], noise=noise)
    torch.testing.assert_close(img, code([z], noise=noise)[0])
    assert (img - plain).abs().max() > 1e-3


@pytest.mark.parametrize("key", ["conv_view", "style_scale"])
def test_adam_switch_values_are_checked_when_loaded(key):
    with pytest.raises(ConfigError, match=f"adam.{key}"):
        get_method("adam").Params(**{key: "code"})


# --- BSA: psi and the perceptual loss ----------------------------------------------------------


def bsa(perceptual_net: torch.nn.Module | None = None, **params):
    """BSA prepared as the loop prepares a fresh run (identity statistics, codes at zero)."""
    cls = get_method("bsa")
    method = cls(cls.Params(**params), context(perceptual_net))
    method.build()
    method.ema_g_modules = [copy.deepcopy(m).requires_grad_(False)
                            for m in method.extra_g_modules()]
    method.setup()
    for ema, module in zip(method.ema_g_modules, method.extra_g_modules(), strict=True):
        ema.load_state_dict(module.state_dict())
    return method


@pytest.mark.parametrize("psi", [0.0, 1.0])
def test_bsa_psi_one_samples_the_generators_own_w_and_zero_its_mean(psi):
    method = bsa(load_toynet(), temperature=psi)
    g = method.ctx.g
    z, noise = torch.randn(4, 32), g.make_noise(4)
    out, _ = method.generate(g, method.ema_g_modules, [z], noise=noise)
    w = g.style(z) if psi == 1.0 else method.codes.w_mean.expand(4, -1)
    expected, _ = g([w], input_is_latent=True, noise=noise)
    torch.testing.assert_close(out, expected)


def replayed_image(method) -> torch.Tensor:
    """The reconstruction `g_extra_losses` makes after `torch.manual_seed(5)`: identity
    statistics, so G's own image of the jittered codes."""
    g, c = method.ctx.g, method.codes.codes.detach()
    torch.manual_seed(5)
    jitter = method.params.code_jitter * torch.randn(c.shape)
    noise = g.make_noise(len(c))
    w = method.codes.w_mean + method.codes.w_std * (c + jitter)
    return g([w], input_is_latent=True, noise=noise)[0].detach()


def test_bsa_vgg_l1_on_the_embedded_world_is_the_weighted_l1_of_the_toy_backbones_features():
    toy = load_toynet()
    method = bsa(toy, perceptual="vgg_l1", vgg_l1_weight=0.5, perceptual_weight=3.0)
    torch.manual_seed(5)
    losses = method.g_extra_losses(None, None)
    img, shots = replayed_image(method), method.ctx.shots
    with torch.no_grad():
        per_layer = [float((a - b).abs().mean()) for a, b in
                     zip(toy.lpips_features(img), toy.lpips_features(shots), strict=True)]
        lpips = 3.0 * float(toy.lpips_distance(img, shots).mean())
    assert len(per_layer) == 4 and min(per_layer) > 0
    expected = 0.5 * sum(per_layer)
    assert losses["bsa_perceptual"].item() == pytest.approx(expected, rel=1e-5)
    assert abs(expected - lpips) > 0.1 * expected  # the default form gives another number
    losses["bsa_perceptual"].backward()
    assert method.codes.codes.grad.abs().sum() > 0


def test_bsa_vgg_l1_reads_vgg16_after_the_relu_of_conv1_1_to_conv4_3():
    """The trunk comes from the protocol's LPIPS VGG (random weights here, nothing is loaded):
    ten maps, and the second, fourth, seventh and tenth are LPIPS's relu1_2, relu2_2, relu3_3
    and relu4_3 of the ImageNet-normalised image."""
    from adaptscope.metrics.backbones import new_lpips

    lpips_vgg = new_lpips("vgg")
    method = bsa(lpips_vgg, perceptual="vgg_l1")
    features = method._feature_net()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        maps = features(x)
        reference = lpips_vgg.net.forward(((x + 1) / 2 - mean) / std)
    assert [m.shape[1] for m in maps] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512]
    assert all((m >= 0).all() for m in maps)
    for mine, theirs in zip([maps[1], maps[3], maps[6], maps[9]], reference[:4], strict=True):
        torch.testing.assert_close(mine, theirs)
    assert not any(p.requires_grad for p in features.parameters())


def test_bsa_vgg_l1_without_a_vgg_lpips_loads_the_resolved_vgg16_file(tmp_path, monkeypatch):
    import torchvision

    torch.manual_seed(3)
    trunk = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])[:23]
    state = {f"features.{k}": v for k, v in trunk.state_dict().items()}
    state["classifier.0.bias"] = torch.zeros(2)  # the rest of the file is ignored
    torch.save(state, tmp_path / "vgg16.pth")
    asked = []
    monkeypatch.setattr(bsa_module, "resolve_weights",
                        lambda name, weights_dir=None: asked.append(name) or tmp_path / "vgg16.pth")
    loaded = bsa_module.vgg_trunk(None)
    assert asked == ["vgg"]
    for (name, a), b in zip(loaded.state_dict().items(), trunk.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("key,value", [("perceptual", "vgg"), ("vgg_l1_weight", -1.0)])
def test_bsa_switch_values_are_checked_when_loaded(key, value):
    with pytest.raises(ConfigError, match=f"bsa.{key}"):
        get_method("bsa").Params(**{key: value})
