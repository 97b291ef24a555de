"""Method losses on hand-made tensors, parameter masks, registry and hyperparameter docs."""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from adaptscope.errors import ConfigError
from adaptscope.methods import (
    BUILTIN_METHODS,
    METHODS,
    MethodContext,
    Step,
    get_method,
    register_method,
)
from adaptscope.methods.base import Method, param_docs
from adaptscope.methods.losses import distance_consistency_loss, info_nce, pairwise_cosine
from adaptscope.models import Discriminator, Generator

CH = {4: 16, 8: 16, 16: 8}


def context(seed: int = 0) -> MethodContext:
    torch.manual_seed(seed)
    g, d = Generator(16, 32, 2, channels=CH), Discriminator(16, channels=CH)
    g_s = copy.deepcopy(g).requires_grad_(False)
    d_s = copy.deepcopy(d).requires_grad_(False)
    return MethodContext(g=g, d=d, g_source=g_s, d_source=d_s,
                         shots=torch.rand(10, 3, 16, 16) * 2 - 1, mixing=0.0)


def build(name: str, **params):
    """A method as a fresh run has it: constructed, built, set up."""
    cls = get_method(name)
    method = cls(cls.Params(**params), context())
    method.build()
    method.setup()
    return method


# --- CDC distance consistency ---------------------------------------------------------------


def test_identical_source_and_target_features_give_zero_cdc_loss():
    feats = [torch.randn(4, 3, 2, 2) for _ in range(3)]
    loss = distance_consistency_loss(feats, [f.clone() for f in feats], [1, 2, 0, 1])
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_cdc_loss_matches_hand_computation():
    # Three 2-D samples; anchor 0 at layer 0 only matters when the other anchors agree.
    src = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    tgt = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    loss = distance_consistency_loss([src], [tgt], [0, 0, 0])
    total = 0.0
    for i in range(3):
        ps = F.softmax(pairwise_cosine(src)[i], 0)
        pt = F.softmax(pairwise_cosine(tgt)[i], 0)
        total += (ps * (ps.log() - pt.log())).sum().item()
    assert loss.item() == pytest.approx(total / 6, rel=1e-6)  # mean over B*(B-1) entries
    # and by hand for anchor 0 of the source: cos to the others is 0 and 1/sqrt(2)
    ps0 = F.softmax(pairwise_cosine(src)[0], 0)
    e = math.exp(1 / math.sqrt(2))
    assert ps0.tolist() == pytest.approx([1 / (1 + e), e / (1 + e)])


def test_pairwise_cosine_excludes_self():
    x = torch.eye(3)
    assert pairwise_cosine(x).shape == (3, 2)
    assert torch.all(pairwise_cosine(x) == 0)


# --- InfoNCE ----------------------------------------------------------------------------------


def test_info_nce_with_positive_equal_to_anchor_and_orthogonal_negatives():
    tau, m = 0.5, 3
    anchors = torch.tensor([[1.0, 0, 0, 0]])
    negatives = torch.tensor([[0.0, 1, 0, 0], [0.0, 0, 1, 0], [0.0, 0, 0, 1]])
    loss = info_nce(anchors, anchors.clone(), negatives, tau, exclude_own_negative=False)
    assert loss.item() == pytest.approx(math.log(1 + m * math.exp(-1 / tau)), rel=1e-5)


def test_info_nce_generator_form_drops_own_negative():
    # Anchor i's own source feature is its positive, not a negative.
    a = torch.eye(3)
    loss = info_nce(a, a.clone(), a.clone(), 0.5, exclude_own_negative=True)
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-2.0)), rel=1e-5)
    with_own = info_nce(a, a.clone(), a.clone(), 0.5, exclude_own_negative=False)
    assert with_own.item() > loss.item()


def test_info_nce_is_large_when_anchor_matches_a_negative():
    a = torch.tensor([[1.0, 0.0]])
    loss = info_nce(a, torch.tensor([[0.0, 1.0]]), a.clone(), 0.07, exclude_own_negative=False)
    assert loss.item() > 10


# --- parameter masks and one-off set-up -------------------------------------------------------


def test_freezed_trains_only_the_trailing_blocks_and_head():
    m = build("freezed", trainable_blocks=1)
    d = m.ctx.d
    chosen = {id(p) for p in m.trainable_d_parameters()}
    expected = {id(p) for mod in (d.convs[-1], d.final_conv, d.final_linear)
                for p in mod.parameters()}
    assert chosen == expected
    with pytest.raises(ValueError, match=r"trainable_blocks = 9 .*0\.\.2"):  # needs D: build()
        build("freezed", trainable_blocks=9)
    with pytest.raises(ConfigError, match="trainable_blocks = -1"):  # needs no D: at load
        get_method("freezed").Params(trainable_blocks=-1)


def test_ewc_penalty_is_zero_at_source_and_grows_with_drift():
    m = build("ewc", n_fisher=4, lam=1.0)
    assert all((f >= 0).all() for f in m.fisher.values())
    assert sum(f.sum() for f in m.fisher.values()) > 0
    step = Step(0, real=m.ctx.shots[:4])
    assert m.g_extra_losses(step, None)["ewc"].item() == 0.0
    with torch.no_grad():
        for p in m.ctx.g.parameters():
            p.add_(0.01)
    assert m.g_extra_losses(step, None)["ewc"].item() > 0


def test_cdc_anchor_iterations_sample_near_anchors_and_patch_iterations_give_patch_logits():
    m = build("cdc", patch_resolution=8)
    z = m.sample_latents(Step(0, real=m.ctx.shots[:4]), 4)[0]
    dist = torch.cdist(z, m.scheme.anchors).min(1).values
    assert torch.all(dist < 0.1 * 32**0.5 * 2)  # within a few stds of some anchor
    logits = m.d_logits(Step(1, real=m.ctx.shots[:4]), m.ctx.shots[:4])
    assert logits.shape == (4, 8 * 8)
    assert m.d_logits(Step(4, real=m.ctx.shots[:4]), m.ctx.shots[:4]).shape == (4, 1)
    with pytest.raises(ValueError, match=r"patch_resolution = 5 .*\[16, 8, 4\]"):
        build("cdc", patch_resolution=5)


def test_cdc_and_dcl_generator_terms_are_zero_or_minimal_at_the_source():
    torch.manual_seed(0)
    cdc = build("cdc")
    loss = cdc.g_extra_losses(Step(1, real=cdc.ctx.shots[:4]), None)["cdc_dist"]
    assert loss.item() == pytest.approx(0.0, abs=1e-3)  # G_t == G_s at the start
    dcl = build("dcl", d_term_minimized_by="both")
    losses = dcl.g_extra_losses(Step(1, real=dcl.ctx.shots[:4]), None)
    assert set(losses) == {"dcl_g", "dcl_d"}
    # the default: the D term is the discriminator's alone (the only public implementation)
    assert set(build("dcl").g_extra_losses(Step(1, real=dcl.ctx.shots[:4]), None)) == {"dcl_g"}
    losses["dcl_g"].backward()
    assert any(p.grad is not None for p in dcl.ctx.g.parameters())


def test_dcl_discriminator_term_follows_its_setting():
    only_g = build("dcl", d_term_minimized_by="generator")
    assert only_g.d_extra_losses(Step(0, real=only_g.ctx.shots[:4]), None) == {}
    only_d = build("dcl", d_term_minimized_by="discriminator")
    assert set(only_d.d_extra_losses(Step(0, real=only_d.ctx.shots[:4]), None)) == {"dcl_d"}
    # Checked when the hyperparameters are built, i.e. when the experiment is loaded.
    with pytest.raises(ConfigError, match="dcl.d_term_minimized_by = 'nobody'.*generator, "
                       "discriminator, both"):
        get_method("dcl").Params(d_term_minimized_by="nobody")


@pytest.mark.parametrize(("method", "key", "value"), [
    ("freezed", "trainable_blocks", -1),
    ("ewc", "n_fisher", 0),
    ("ewc", "fisher_batch", 0),  # would never finish the Fisher estimate
    ("cdc", "feat_const_batch", 1),
    ("cdc", "subspace_freq", 0),
    ("cdc", "patch_resolution", -8),
    ("dcl", "tau", 0.0),
    ("dcl", "contrastive_batch", 1),
])
def test_values_that_need_no_networks_fail_when_the_hyperparameters_are_built(method, key, value):
    params = get_method(method).Params
    params()  # the defaults are valid
    with pytest.raises(ConfigError, match=f"^{method}.{key} = {value!r} is not allowed: "):
        params(**{key: value})


def test_method_state_round_trips():
    cdc = build("cdc")
    fresh = get_method("cdc")(get_method("cdc").Params(), context(1))
    fresh.build()  # a resumed run builds, then loads instead of setting up
    fresh.load_state_dict(cdc.state_dict())
    assert torch.equal(fresh.scheme.anchors, cdc.scheme.anchors)
    assert torch.equal(fresh.scheme.head[0].weight, cdc.scheme.head[0].weight)


# --- registry -------------------------------------------------------------------------------


def test_registry_lists_builtin_methods_and_accepts_new_ones():
    assert {"tgan", "freezed", "ewc", "cdc", "dcl"} <= set(METHODS)

    @register_method("test-noop")
    class NoOp(Method):
        summary = "test"

        @dataclass
        class Params:
            strength: float = 1.0

    try:
        assert get_method("test-noop") is NoOp
        assert param_docs(NoOp) == [("strength", 1.0, "")]
    finally:
        METHODS.unregister("test-noop")
    with pytest.raises(KeyError, match="unknown method 'nope'"):
        get_method("nope")


def test_every_hyperparameter_of_every_method_starts_with_its_provenance_tag():
    """`adaptscope methods` shows each setting's provenance first: [C] confirmed in the
    authors' code, [S] second-hand, [U] unconfirmed; a setting without one hides which."""
    assert {cls.name for cls in BUILTIN_METHODS} <= set(METHODS.names())
    for name, cls in METHODS.items():
        docs = param_docs(cls)
        assert [f for f, _, _ in docs] == [f.name for f in dataclasses.fields(cls.Params)]
        for field_name, _, doc in docs:
            assert re.match(r"\[[CSU]\] \S", doc), f"{name}.{field_name}: {doc!r}"
