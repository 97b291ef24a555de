"""Each method's defining maths, with expectations written out from the papers' equations.

The expected numbers are computed here from the definitions (on small tensors, or with autograd
on the method's own inputs), never by calling the helper under test; spies record what a method
feeds its losses, so a test can say which network and which images each term uses.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from adaptscope.methods import MethodContext, Step, get_method
from adaptscope.methods import cdc as cdc_module
from adaptscope.methods import dcl as dcl_module
from adaptscope.methods.losses import info_nce
from adaptscope.models import Discriminator, Generator

CH = {4: 16, 8: 16, 16: 8}


def context(seed: int = 0, drift: float = 0.0) -> MethodContext:
    """Tiny networks; with `drift` the adapted G has moved away from the frozen source G."""
    torch.manual_seed(seed)
    g, d = Generator(16, 32, 2, channels=CH), Discriminator(16, channels=CH)
    g_s = copy.deepcopy(g).requires_grad_(False)
    d_s = copy.deepcopy(d).requires_grad_(False)
    if drift:
        with torch.no_grad():
            for p in g.parameters():
                p.add_(drift * torch.randn_like(p))
    return MethodContext(g=g, d=d, g_source=g_s, d_source=d_s,
                         shots=torch.rand(10, 3, 16, 16) * 2 - 1, mixing=0.0)


def build(name: str, ctx: MethodContext | None = None, **params):
    cls = get_method(name)
    method = cls(cls.Params(**params), ctx or context())
    method.build()
    method.setup()
    return method


def grads_of(loss: torch.Tensor, *modules) -> list[set[str]]:
    """Names of the parameters of each module that `loss` gives a non-zero gradient."""
    named = [dict(m.named_parameters()) for m in modules]
    params = [p for d in named for p in d.values() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    by_param = {id(p): g for p, g in zip(params, grads, strict=True)}
    return [{n for n, p in d.items() if by_param.get(id(p)) is not None
             and by_param[id(p)].abs().sum() > 0} for d in named]


# --- InfoNCE ------------------------------------------------------------------------------------


def test_info_nce_uses_cosine_similarity_of_unnormalised_features():
    tau = 0.5
    anchors = torch.tensor([[3.0, 4.0], [0.0, -2.0]])  # lengths 5 and 2
    positives = torch.tensor([[0.6, 0.8], [1.0, 1.0]])
    negatives = torch.tensor([[10.0, 0.0], [0.0, 0.1], [-1.0, 1.0]])

    def cos(a, b):
        return (a @ b).item() / (a.norm().item() * b.norm().item())

    expected = 0.0
    for a, p in zip(anchors, positives, strict=True):
        pos = math.exp(cos(a, p) / tau)
        neg = sum(math.exp(cos(a, n) / tau) for n in negatives)
        expected += -math.log(pos / (pos + neg))
    loss = info_nce(anchors, positives, negatives, tau, exclude_own_negative=False)
    assert loss.item() == pytest.approx(expected / 2, rel=1e-6)


# --- EWC ----------------------------------------------------------------------------------------


def test_ewc_fisher_is_the_mean_squared_gradient_of_log_d_of_g():
    ctx = context()
    ewc = get_method("ewc")(get_method("ewc").Params(n_fisher=3, fisher_batch=1), ctx)
    ewc.build()
    state = torch.get_rng_state()
    ewc.setup()
    # By the definition, replaying the same draws: F_i = mean_n (d log sigmoid(D_s(G(z_n))) / d
    # theta_i)^2 at the source weights.
    torch.set_rng_state(state)
    g, params = ctx.g, dict(ctx.g.named_parameters())
    expected = {k: torch.zeros_like(p) for k, p in params.items()}
    for _ in range(3):
        img, _ = g([torch.randn(1, g.style_dim)])
        log_likelihood = torch.log(torch.sigmoid(ctx.d_source(img))).mean()
        grads = torch.autograd.grad(log_likelihood, list(params.values()), allow_unused=True)
        for k, gr in zip(params, grads, strict=True):
            if gr is not None:
                expected[k] += gr ** 2 / 3
    for k in params:
        torch.testing.assert_close(ewc.fisher[k], expected[k], rtol=1e-4, atol=1e-12)
    assert sum(v.sum() for v in expected.values()) > 0


def test_ewc_penalty_is_fisher_weighted_squared_drift():
    ewc = build("ewc", n_fisher=2, lam=3.0)
    g = ewc.ctx.g
    names = [n for n, _ in g.named_parameters()]
    # Hand-set Fisher: 2 on the first half of the tensors, 0.5 on the rest; drift 0.1 everywhere.
    ewc.fisher = {n: torch.full_like(p, 2.0 if i < len(names) // 2 else 0.5)
                  for i, (n, p) in enumerate(g.named_parameters())}
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.1)
    expected = 3.0 * sum((2.0 if i < len(names) // 2 else 0.5) * 0.1 ** 2 * p.numel()
                         for i, (_, p) in enumerate(g.named_parameters()))
    penalty = ewc.g_extra_losses(Step(0, real=ewc.ctx.shots[:4]), None)["ewc"]
    assert penalty.item() == pytest.approx(expected, rel=1e-4)


# --- CDC ----------------------------------------------------------------------------------------


def test_cdc_draws_one_random_layer_per_anchor_and_weights_the_term(monkeypatch):
    seen = []
    original = cdc_module.distance_consistency_loss

    def spy(source_layers, target_layers, layer_per_anchor):
        value = original(source_layers, target_layers, layer_per_anchor)
        seen.append((list(layer_per_anchor), value.detach()))
        return value

    monkeypatch.setattr(cdc_module, "distance_consistency_loss", spy)
    cdc = build("cdc", context(drift=0.05))
    assert cdc.params.kl_weight == 1000.0  # CDC's train.py default
    g = cdc.ctx.g
    for it in range(1, 9):
        out = cdc.g_extra_losses(Step(it, real=cdc.ctx.shots[:4]), None)["cdc_dist"]
        layers, value = seen[-1]
        assert out.item() == pytest.approx(1000.0 * value.item(), rel=1e-6)
        assert value.item() > 0  # the adapted G has drifted: the term is not zero
    layers = [layer for layers, _ in seen for layer in layers]
    assert len(layers) == 8 * cdc.params.feat_const_batch
    assert min(layers) >= 1 and max(layers) <= g.num_layers - 1
    assert len(set(layers)) > 3  # drawn per anchor, not one fixed layer


# --- DCL ----------------------------------------------------------------------------------------


def _spy_info_nce(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]]:
    calls = []
    original = dcl_module.info_nce

    def spy(anchors, positives, negatives, tau, exclude_own_negative):
        calls.append((anchors.detach(), positives.detach(), negatives.detach(),
                      exclude_own_negative))
        return original(anchors, positives, negatives, tau, exclude_own_negative)

    monkeypatch.setattr(dcl_module, "info_nce", spy)
    return calls


def test_dcl_generator_term_anchors_adapted_features_on_source_positives_and_negatives(
        monkeypatch):
    calls = _spy_info_nce(monkeypatch)
    dcl = build("dcl", context(drift=0.05), d_term_minimized_by="discriminator")
    state = torch.get_rng_state()
    dcl.g_extra_losses(Step(1, real=dcl.ctx.shots[:4]), None)
    (anchors, positives, negatives, exclude_own), = calls
    # Replay the draws: the latents, each generator's own noise maps (CDC's code draws fresh
    # noise per call), then the layer.
    torch.set_rng_state(state)
    z = torch.randn(dcl.params.contrastive_batch, dcl.ctx.g.style_dim)
    noise_source = dcl.ctx.g.make_noise(z.shape[0])
    noise_adapted = dcl.ctx.g.make_noise(z.shape[0])
    layer = int(torch.randint(1, dcl.ctx.g.num_layers, ()).item())
    with torch.no_grad():
        _, _, feats_source = dcl.ctx.g_source([z], noise=noise_source, return_features=True)
        _, _, feats_adapted = dcl.ctx.g([z], noise=noise_adapted, return_features=True)
    torch.testing.assert_close(anchors, feats_adapted[layer])
    torch.testing.assert_close(positives, feats_source[layer])
    torch.testing.assert_close(negatives, feats_source[layer])  # other latents, source G
    assert not torch.allclose(negatives, feats_adapted[layer])
    assert exclude_own


def _residual_branches(d: Discriminator, x: torch.Tensor) -> list[torch.Tensor]:
    """fromRGB output, then each block's conv1 and conv2 outputs (before the skip), the block
    output itself carried on by the block's own forward."""
    out = d.convs[0](x)
    maps = [out]
    for block in list(d.convs)[1:]:
        h1 = block.conv1(out)
        maps += [h1, block.conv2(h1)]
        out = block(out)
    return maps


def _block_outputs(d: Discriminator, x: torch.Tensor) -> list[torch.Tensor]:
    maps, out = [], x
    for block in d.convs:
        out = block(out)
        maps.append(out)
    return maps


@pytest.mark.parametrize(("kind", "maps_of"), [("branches", _residual_branches),
                                                ("blocks", _block_outputs)])
def test_dcl_discriminator_term_contrasts_against_real_target_images(monkeypatch, kind,
                                                                      maps_of):
    calls = _spy_info_nce(monkeypatch)
    dcl = build("dcl", context(drift=0.05), d_term_minimized_by="discriminator",
                d_features=kind, shared_noise=True)
    real = dcl.ctx.shots[:4]
    state = torch.get_rng_state()
    dcl.d_extra_losses(Step(1, real=real), None)
    (anchors, positives, negatives, exclude_own), = calls
    torch.set_rng_state(state)
    z = torch.randn(dcl.params.contrastive_batch, dcl.ctx.g.style_dim)
    noise = dcl.ctx.g.make_noise(z.shape[0])  # shared_noise: one set for both generators
    n_maps = len(maps_of(dcl.ctx.d, real))
    index = int(torch.randint(1, n_maps, ()).item())  # never the 1x1 fromRGB map
    with torch.no_grad():
        img_s, _ = dcl.ctx.g_source([z], noise=noise)
        img_t, _ = dcl.ctx.g([z], noise=noise)
        d_of = {name: maps_of(dcl.ctx.d, x)[index]
                for name, x in (("adapted", img_t), ("source", img_s), ("real", real))}
    torch.testing.assert_close(anchors, d_of["adapted"])  # D_t^l(G_t(z_i))
    torch.testing.assert_close(positives, d_of["source"])  # D_t^l(G_s(z_i))
    torch.testing.assert_close(negatives, d_of["real"])  # D_t^l(x_j), real target images
    assert not exclude_own


# --- which parameters each term moves -----------------------------------------------------------


def test_freezed_discriminator_step_moves_only_its_trailing_blocks():
    m = build("freezed", trainable_blocks=2)
    d = m.ctx.d
    trainable = {id(p) for p in m.trainable_d_parameters()}
    names = {n for n, p in d.named_parameters() if id(p) in trainable}
    # 16 px: convs.0 is the 1x1 fromRGB layer, convs.1 (16 -> 8) and convs.2 (8 -> 4) the blocks
    assert len(d.convs) == 3
    assert names == {n for n, _ in d.named_parameters()
                     if n.startswith(("convs.1.", "convs.2.", "final_conv.", "final_linear."))}


@pytest.mark.parametrize(("method", "term", "params"), [
    ("ewc", "ewc", {"n_fisher": 2}),
    ("cdc", "cdc_dist", {}),
    ("dcl", "dcl_g", {"d_term_minimized_by": "discriminator"}),
    ("dcl", "dcl_d", {"d_term_minimized_by": "generator"}),
])
def test_generator_terms_move_the_adapted_generator_only(method, term, params):
    m = build(method, **params)
    ctx = m.ctx
    with torch.no_grad():  # adaptation has begun: G has left the source (and EWC's anchor)
        for p in ctx.g.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss = m.g_extra_losses(Step(1, real=ctx.shots[:4]), None)[term]
    g_names, d_names, gs_names, ds_names = grads_of(loss, ctx.g, ctx.d, ctx.g_source,
                                                    ctx.d_source)
    assert g_names  # the adapted G learns from the term
    assert not gs_names and not ds_names  # the source networks stay frozen
    if term != "dcl_d":  # only DCL's discriminator term reads D
        assert not d_names


def test_dcl_discriminator_side_term_moves_the_discriminator_only():
    m = build("dcl", context(drift=0.05), d_term_minimized_by="discriminator")
    ctx = m.ctx
    loss = m.d_extra_losses(Step(1, real=ctx.shots[:4]), None)["dcl_d"]
    g_names, d_names, gs_names = grads_of(loss, ctx.g, ctx.d, ctx.g_source)
    assert d_names and not g_names and not gs_names


def test_cdc_patch_head_trains_with_the_discriminator_and_reads_a_d_feature_map():
    m = build("cdc", patch_resolution=8)
    real = m.ctx.shots[:4]
    logits = m.d_logits(Step(1, real=real), real)  # a patch iteration
    d_names, head_names = grads_of(F.softplus(-logits).mean(), m.ctx.d, m.scheme.head)
    assert head_names == {n for n, _ in m.scheme.head.named_parameters()}
    # the head reads the 8x8 map: blocks after it (lower resolutions) get no gradient
    assert d_names and not any(n.startswith(("convs.2.", "final_")) for n in d_names)
    # ... and it reads block 1's residual branch, before the skip is added (CDC model.py)
    assert "convs.1.conv2.1.weight" in d_names
    assert not any(n.startswith("convs.1.skip") for n in d_names)


def test_cdc_patch_logits_are_a_leaky_relu_conv_of_the_residual_branch():
    m = build("cdc", patch_resolution=8)
    d, head = m.ctx.d, m.scheme.head
    with torch.no_grad():
        head[1].bias.fill_(0.3)  # a non-zero bias shows where it is added
        x = m.ctx.shots[:4]
        branch = d.convs[1].conv2(d.convs[1].conv1(d.convs[0](x)))
        conv = F.conv2d(branch, head[0].weight * head[0].scale, padding=1)
        expected = F.leaky_relu(conv + 0.3, 0.2) * math.sqrt(2)
        torch.testing.assert_close(m.d_logits(Step(1, real=x), x), expected.flatten(1))
