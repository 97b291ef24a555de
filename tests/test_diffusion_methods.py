"""The diffusion family's methods: ddpm_ft, lora, dreambooth, domainstudio.

Each method's defining maths is checked against an expectation written out here from its
equation (explicit loops over pairs, a hand-made image with a known wavelet answer, the
low-rank path computed as two maps), on the tiny 16 px UNet of `_tiny_diffusion`; then what
each method trains, one step through the shared `DiffusionStep`, the checkpoint round trip
and the settings' checks.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from _tiny_diffusion import TINY_SCHEDULE, tiny_diffusion
from torch import nn

from adaptscope.errors import ConfigError
from adaptscope.methods.base import Step
from adaptscope.methods.ddpm_ft import DDPMFineTune
from adaptscope.methods.diffusion_base import DiffusionContext, DiffusionMethod
from adaptscope.methods.domainstudio import (
    DomainStudio,
    haar_high_frequency,
    pairwise_similarity_kl,
)
from adaptscope.methods.dreambooth import DreamBooth
from adaptscope.methods.lora import LoRA, LoRAAdapters, LoRAView, matching_layers
from adaptscope.models.diffusion import FixedNoise
from adaptscope.spec import LoopSpec
from adaptscope.train.diffusion_step import DiffusionStep

pytestmark = pytest.mark.usefixtures("one_thread")

FAST_DREAMBOOTH = {"num_class_images": 6, "class_sampler_steps": 3}


def context(seed: int = 0, drift: float = 0.0) -> DiffusionContext:
    """The tiny model, its frozen source copy and 6 shots; with `drift` the model being adapted
    has moved away from the source (so the source-vs-adapted terms are not trivially 0)."""
    model = tiny_diffusion(seed)
    source = copy.deepcopy(model).requires_grad_(False).eval()
    if drift:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(drift * torch.randn_like(p))
    gen = torch.Generator().manual_seed(100 + seed)
    shots = torch.rand(6, 3, 16, 16, generator=gen) * 2 - 1
    return DiffusionContext(model=model, source=source, shots=shots)


def make(cls: type[DiffusionMethod], ctx: DiffusionContext | None = None,
         fresh: bool = True, **params) -> DiffusionMethod:
    method = cls(cls.Params(**params), ctx or context())
    method.build()
    if fresh:
        method.setup()
    return method


def stepper(method: DiffusionMethod, lr: float = 1e-3) -> DiffusionStep:
    return DiffusionStep(method.ctx.model, method, LoopSpec(lr=lr, betas=(0.9, 0.999)))


def batch(ctx: DiffusionContext, i: int) -> torch.Tensor:
    return ctx.shots[torch.arange(4) + i % 3]


def abar(t: torch.Tensor) -> torch.Tensor:
    """The tiny schedule's cumulative alphas, from its betas (Ho et al. 2020)."""
    s = TINY_SCHEDULE
    betas = torch.linspace(s["beta_start"], s["beta_end"], s["num_train_timesteps"],
                           dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()[t].view(-1, 1, 1, 1)


def ddpm_draw(x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """t (uniform, one per image), then noise, from the global RNG; and x_t (Ho et al. eq. 4)."""
    t = torch.randint(0, TINY_SCHEDULE["num_train_timesteps"], (len(x0),))
    noise = torch.randn_like(x0)
    return t, noise, abar(t).sqrt() * x0 + (1 - abar(t)).sqrt() * noise


def x0_from(x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (x_t - (1 - abar(t)).sqrt() * eps) / abar(t).sqrt()


def unet_state(ctx: DiffusionContext) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in ctx.model.state_dict().items()}


# --- DomainStudio's maths ----------------------------------------------------------------------

def hf_by_blocks(x: torch.Tensor) -> torch.Tensor:
    """LH + HL + HH of each 2x2 block [[a, b], [c, d]] written out from the Haar filters
    L = (1, 1) / sqrt 2, H = (-1, 1) / sqrt 2 (band XY: X down the rows, Y along them)."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    lh = (-a + b - c + d) / 2  # L down the rows, H along the columns
    hl = (-a - b + c + d) / 2
    hh = (a - b - c + d) / 2
    return lh + hl + hh


def kl_by_loops(source: torch.Tensor, adapted: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Pairwise-similarity KL, pair by pair: cosine of image i to each j != i, softmax per i,
    mean over the n (n - 1) entries of p_s (log p_s - log p_a)."""
    n = len(source)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(n):
        sims_s, sims_a = [], []
        for j in range(n):
            if i != j:
                sims_s.append(F.cosine_similarity(source[i].flatten(), source[j].flatten(), 0))
                sims_a.append(F.cosine_similarity(adapted[i].flatten(), adapted[j].flatten(), 0))
        es = [math.exp(s.item() / tau) for s in sims_s]
        ea = [math.exp(s.item() / tau) for s in sims_a]
        for k in range(n - 1):
            p, q = es[k] / sum(es), ea[k] / sum(ea)
            total += p * (math.log(p) - math.log(q))
    return total / (n * (n - 1))


def test_haar_high_frequency_of_hand_made_images():
    """A checkerboard is all diagonal detail (HH = 2, LH = HL = 0), column stripes all LH (1),
    row stripes all HL (1), a constant none; each channel on its own."""
    i, j = torch.meshgrid(torch.arange(6), torch.arange(8), indexing="ij")
    checker = ((i + j) % 2 == 0).float() * 2 - 1  # 1 at (0, 0): blocks [[1, -1], [-1, 1]]
    columns = (j % 2).float()  # blocks [[0, 1], [0, 1]]
    rows = (i % 2).float()  # blocks [[0, 0], [1, 1]]
    img = torch.stack([checker, columns, rows])[None]
    hf = haar_high_frequency(torch.cat([img, torch.full_like(img, 0.3)]))
    assert hf.shape == (2, 3, 3, 4)
    torch.testing.assert_close(hf[0, 0], torch.full((3, 4), 2.0))
    torch.testing.assert_close(hf[0, 1], torch.ones(3, 4))
    torch.testing.assert_close(hf[0, 2], torch.ones(3, 4))
    torch.testing.assert_close(hf[1], torch.zeros(3, 3, 4), atol=1e-6, rtol=0)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(haar_high_frequency(x), hf_by_blocks(x))
    d = x[..., 1::2, 1::2]
    torch.testing.assert_close(haar_high_frequency(x), 2 * d - F.avg_pool2d(x, 2) * 2)


def test_pairwise_similarity_kl_equals_the_loops():
    torch.manual_seed(0)
    src, ada = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    for tau in (1.0, 0.5):
        got = pairwise_similarity_kl(src, ada, tau)
        assert got.item() == pytest.approx(kl_by_loops(src, ada, tau).item(), rel=1e-5)
    assert pairwise_similarity_kl(src, src).item() == pytest.approx(0.0, abs=1e-7)
    # KL(p_source || p_adapted), not the reverse
    src4, ada4 = torch.randn(4, 5), torch.randn(4, 5)
    assert pairwise_similarity_kl(src4, ada4).item() == pytest.approx(
        kl_by_loops(src4, ada4).item(), rel=1e-5)
    assert pairwise_similarity_kl(src4, ada4).item() != pytest.approx(
        kl_by_loops(ada4, src4).item(), rel=1e-3)


def test_domainstudio_terms_follow_the_authors_equations():
    """The x0 both models predict from the SAME x_t and t; pairwise KL on 3 of the batch; the
    same on their Haar high frequencies; the high-frequency MSE against the shots'."""
    ctx = context(drift=0.1)
    w = {"pair_weight": 3.0, "hf_pair_weight": 5.0, "hf_mse_weight": 0.7}
    method = make(DomainStudio, ctx, **w)
    real = batch(ctx, 0)
    torch.manual_seed(7)
    with torch.no_grad():
        terms = method.losses(Step(0, real))
    assert ctx.source.training is False  # the source's mode is restored

    torch.manual_seed(7)
    t, noise, x_t = ddpm_draw(real)
    pick = torch.randperm(4)[:3]
    with torch.no_grad():
        eps, eps_s = ctx.model(x_t, t), ctx.source(x_t, t)
    x0, x0_s = x0_from(x_t, eps, t), x0_from(x_t, eps_s, t)
    expected = {
        "diffusion": (eps - noise).pow(2).mean(),
        "pair": 3.0 * kl_by_loops(x0_s[pick], x0[pick]),
        "hf_pair": 5.0 * kl_by_loops(hf_by_blocks(x0_s[pick]), hf_by_blocks(x0[pick])),
        "hf_mse": 0.7 * (hf_by_blocks(x0) - hf_by_blocks(real)).pow(2).mean(),
    }
    assert set(terms) == set(expected)
    for key, value in expected.items():
        # float32 KL of close distributions: a few 1e-8 of cancellation
        assert terms[key].item() == pytest.approx(value.item(), rel=1e-4, abs=1e-7), key
    assert all(terms[k].item() > 0 for k in ("pair", "hf_pair"))


def test_domainstudio_batch_smaller_than_sim_size_is_refused():
    ctx = context()
    method = make(DomainStudio, ctx, sim_size=5)
    with pytest.raises(ConfigError, match="domainstudio.sim_size"):
        method.losses(Step(0, batch(ctx, 0)))


# --- LoRA's maths -----------------------------------------------------------------------------

class ConvThenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.head = nn.Linear(5 * 4 * 4, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).flatten(1))


def test_lora_merged_forward_equals_w_x_plus_scaled_b_a_x():
    """One conv / linear with W + s B A equals W x + s B (A x): A as an r-channel conv of the
    layer's kernel, B as a 1x1 conv (peft's unmerged LoRA conv); s = alpha / r."""
    torch.manual_seed(0)
    net = ConvThenLinear()
    adapters = LoRAAdapters(net, ["conv.weight", "head.weight"], rank=2, alpha=3.0)
    for _, f in adapters.items():
        with torch.no_grad():
            f.lora_A.normal_()
            f.lora_B.normal_()
    view = LoRAView(net, adapters)
    x = torch.randn(2, 3, 4, 4)
    s = 3.0 / 2
    fc, fh = adapters.factors["conv/weight"], adapters.factors["head/weight"]
    h = F.conv2d(x, net.conv.weight, net.conv.bias, padding=1) + s * F.conv2d(
        F.conv2d(x, fc.lora_A.view(2, 3, 3, 3), padding=1), fc.lora_B.view(5, 2, 1, 1))
    h = h.flatten(1)
    expected = h @ net.head.weight.t() + net.head.bias + s * (h @ fh.lora_A.t()) @ fh.lora_B.t()
    torch.testing.assert_close(view(x), expected, rtol=1e-5, atol=1e-5)
    # the module itself is untouched: its own forward is the source's
    torch.testing.assert_close(net(x), net.head(net.conv(x).flatten(1)))
    assert set(dict(net.named_parameters())) == {"conv.weight", "conv.bias", "head.weight",
                                                 "head.bias"}


def test_lora_equals_the_source_exactly_at_init():
    ctx = context()
    method = make(LoRA, ctx)
    for _, f in method.adapters.items():
        assert f.lora_A.abs().sum() > 0 and torch.equal(f.lora_B, torch.zeros_like(f.lora_B))
        bound = 1 / math.sqrt(f.lora_A.shape[1])  # kaiming_uniform(a=sqrt 5): 1/sqrt(fan_in)
        assert f.lora_A.abs().max() <= bound
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([0, 40, 99])
    with torch.no_grad():
        assert torch.equal(method.denoiser()(x, t), ctx.model(x, t))
    gauss = make(LoRA, context(), init="gaussian", rank=8, alpha=2.0)
    a = torch.cat([f.lora_A.flatten() for _, f in gauss.adapters.items()])
    assert a.std().item() == pytest.approx(1 / 8, rel=0.05)
    assert all(f.scale == 2.0 / 8 for _, f in gauss.adapters.items())


def test_lora_targets():
    model = tiny_diffusion()
    default = make(LoRA, DiffusionContext(model))
    names = default.adapters.weight_names
    assert {n.split(".")[-2] for n in names} == {"to_q", "to_k", "to_v", "0", "conv1", "conv2"}
    assert all(n.endswith(".weight") for n in names)
    assert len([n for n in names if ".to_out.0." in n]) == 4  # 1 down, 2 up, 1 mid attention
    attention = make(LoRA, DiffusionContext(model), target_modules=["to_q", "to_out.0"])
    assert len(attention.adapters.weight_names) == 8
    found = matching_layers(model, ["conv1", "conv_in"])
    assert found["conv_in"] == ["unet.conv_in"] and "unet.down_blocks.0.resnets.0.conv1" in \
        found["conv1"]
    with pytest.raises(ConfigError, match="lora.target_modules.*'attn_q'"):
        make(LoRA, DiffusionContext(model), target_modules=["to_q", "attn_q"])


# --- DreamBooth's maths -----------------------------------------------------------------------

def test_dreambooth_class_images_come_from_the_source_and_leave_the_rng_alone():
    ctx = context(drift=0.05)
    rng = torch.get_rng_state()
    method = make(DreamBooth, ctx, class_seed=3, class_sample_batch=4, **FAST_DREAMBOOTH)
    assert torch.equal(torch.get_rng_state(), rng)
    noise = FixedNoise(16, 3).draw(6)
    expected = ctx.source.sampler(3)(noise)  # the SOURCE, not the drifted model
    assert method.class_images.shape == (6, 3, 16, 16)
    torch.testing.assert_close(method.class_images, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(ctx.model.sampler(3)(noise), expected, atol=1e-3)


def test_dreambooth_loss_is_instance_mse_plus_lambda_class_mse():
    ctx = context()
    method = make(DreamBooth, ctx, prior_loss_weight=0.3, **FAST_DREAMBOOTH)
    real = batch(ctx, 1)
    torch.manual_seed(11)
    with torch.no_grad():
        terms = method.losses(Step(0, real))
    torch.manual_seed(11)
    pick = torch.randperm(6)[:4]
    cls = method.class_images[pick]
    assert len(set(pick.tolist())) == 4
    t, noise, x_t = ddpm_draw(torch.cat([real, cls]))  # one draw over both halves
    with torch.no_grad():
        eps = ctx.model(x_t, t)
    instance = F.mse_loss(eps[:4], noise[:4])
    prior = F.mse_loss(eps[4:], noise[4:])
    assert terms["diffusion"].item() == pytest.approx(instance.item(), rel=1e-5)
    assert terms["prior"].item() == pytest.approx(0.3 * prior.item(), rel=1e-5)
    small = make(DreamBooth, context(), num_class_images=3, class_sampler_steps=2)
    with pytest.raises(ConfigError, match="dreambooth.num_class_images"):
        small.losses(Step(0, real))


def test_ddpm_ft_loss_is_the_ddpm_objective():
    ctx = context()
    method = make(DDPMFineTune, ctx)
    real = batch(ctx, 2)
    torch.manual_seed(5)
    with torch.no_grad():
        terms = method.losses(Step(0, real))
    torch.manual_seed(5)
    t, noise, x_t = ddpm_draw(real)
    with torch.no_grad():
        expected = (ctx.model(x_t, t) - noise).pow(2).mean()
    assert terms["diffusion"].item() == pytest.approx(expected.item(), rel=1e-5)


# --- training: what moves, one step, resume ---------------------------------------------------

METHODS = {
    "ddpm_ft": (DDPMFineTune, {}, {"loss_diffusion"}),
    "lora": (LoRA, {}, {"loss_diffusion"}),
    "dreambooth": (DreamBooth, FAST_DREAMBOOTH, {"loss_diffusion", "loss_prior"}),
    "domainstudio": (DomainStudio, {}, {"loss_diffusion", "loss_pair", "loss_hf_pair",
                                        "loss_hf_mse"}),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_one_step_trains_what_the_method_says(name):
    cls, params, keys = METHODS[name]
    ctx = context(drift=0.02)
    method = make(cls, ctx, **params)
    assert cls.name == name and method.family == "diffusion"
    step = stepper(method, lr=1e-2)
    before, source_before = unet_state(ctx), copy.deepcopy(ctx.source.state_dict())
    torch.manual_seed(0)
    out = step(0, batch(ctx, 0))
    assert set(out) == keys and all(torch.isfinite(v) for v in out.values())
    after = unet_state(ctx)
    assert all(torch.equal(v, ctx.source.state_dict()[k]) for k, v in source_before.items())
    unet_params = {id(p) for p in ctx.model.parameters()}
    if name == "lora":
        adapter_params = list(method.adapters.parameters())
        assert {id(p) for p in step.params} == {id(p) for p in adapter_params}
        assert all(torch.equal(before[k], after[k]) for k in before)  # the UNet's own weights
        assert all(f.lora_B.abs().sum() > 0 for _, f in method.adapters.items())
        x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 60])
        with torch.no_grad():
            assert not torch.equal(method.denoiser()(x, t), ctx.model(x, t))
    else:
        assert {id(p) for p in step.params} == unet_params
        moved = [k for k, p in ctx.model.named_parameters() if not torch.equal(before[k], p)]
        assert len(moved) == len(unet_params)  # every UNet weight trains


@pytest.mark.parametrize("name", list(METHODS))
def test_state_round_trip_continues_bit_for_bit(name):
    """Two steps, checkpoint (model, optimiser, method state, RNG), a fresh method loads it; its
    next step equals the uninterrupted run's."""
    cls, params, _ = METHODS[name]
    ctx = context(drift=0.02)
    source_copy = copy.deepcopy(ctx.source)
    method = make(cls, ctx, **params)
    step = stepper(method)
    torch.manual_seed(42)
    for i in range(2):
        step(i, batch(ctx, i))
    saved = copy.deepcopy({"model": ctx.model.state_dict(), "opt": step.opt.state_dict(),
                           "method": method.state_dict(), "rng": torch.get_rng_state()})
    uninterrupted = step(2, batch(ctx, 2))

    ctx2 = DiffusionContext(model=tiny_diffusion(seed=9), source=source_copy, shots=ctx.shots)
    ctx2.model.load_state_dict(saved["model"])
    resumed_method = make(cls, ctx2, fresh=False, **params)
    resumed_method.load_state_dict(saved["method"])
    resumed = stepper(resumed_method)
    resumed.opt.load_state_dict(saved["opt"])
    torch.set_rng_state(saved["rng"])
    again = resumed(2, batch(ctx2, 2))
    assert all(torch.equal(uninterrupted[k], again[k]) for k in uninterrupted)
    for a, b in zip(step.params, resumed.params, strict=True):
        assert torch.equal(a, b)
    if name == "dreambooth":
        assert torch.equal(resumed_method.class_images, method.class_images)


# --- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("cls", "params", "setting"), [
    (LoRA, {"rank": 0}, "lora.rank"),
    (LoRA, {"alpha": 0.0}, "lora.alpha"),
    (LoRA, {"init": "orthogonal"}, "lora.init"),
    (LoRA, {"target_modules": []}, "lora.target_modules"),
    (DreamBooth, {"prior_loss_weight": -0.5}, "dreambooth.prior_loss_weight"),
    (DreamBooth, {"num_class_images": 0}, "dreambooth.num_class_images"),
    (DreamBooth, {"class_sampler_steps": 0}, "dreambooth.class_sampler_steps"),
    (DomainStudio, {"pair_weight": -1.0}, "domainstudio.pair_weight"),
    (DomainStudio, {"hf_mse_weight": -1.0}, "domainstudio.hf_mse_weight"),
    (DomainStudio, {"sim_size": 1}, "domainstudio.sim_size"),
    (DomainStudio, {"temperature": 0.0}, "domainstudio.temperature"),
])
def test_bad_settings_name_the_setting(cls, params, setting):
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        cls.Params(**params)


def test_every_setting_documents_its_provenance():
    from adaptscope.methods.base import param_docs

    for cls in (LoRA, DreamBooth, DomainStudio):
        docs = param_docs(cls)
        assert docs and all(doc[:3] in ("[C]", "[S]", "[U]") for _, _, doc in docs), cls.name
