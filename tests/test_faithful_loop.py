"""The loop details every reference shares, checked against their definitions on tiny models:
random flips of the shots, R1 on the method's own logits path, ADA on what D sees, the
recorded loss means and EWC's gradient norms, TGAN+ADA's settings, DCL's one contrastive batch
per iteration."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from _tiny_world import make_source_checkpoint, tiny_spec

from adaptscope import load_trajectories
from adaptscope.methods import Method, MethodContext, Step, get_method
from adaptscope.methods import dcl as dcl_module
from adaptscope.methods.losses import info_nce
from adaptscope.models import Discriminator, Generator
from adaptscope.spec import LoopSpec
from adaptscope.train.experiment import load_experiment, run_specs
from adaptscope.train.loop import TrainingStats, real_batch, run_adaptation
from adaptscope.train.step import GANStep

CH = {4: 16, 8: 16, 16: 8}


def context(seed: int = 0, drift: float = 0.0) -> MethodContext:
    torch.manual_seed(seed)
    g, d = Generator(16, 32, 2, channels=CH), Discriminator(16, channels=CH)
    g_s, d_s = copy.deepcopy(g).requires_grad_(False), copy.deepcopy(d).requires_grad_(False)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(drift * torch.randn_like(p))
    return MethodContext(g=g, d=d, g_source=g_s, d_source=d_s,
                         shots=torch.rand(10, 3, 16, 16) * 2 - 1, mixing=0.0)


def build(name: str, ctx: MethodContext | None = None, **params) -> Method:
    cls = get_method(name)
    method = cls(cls.Params(**params), ctx or context())
    method.build()
    method.setup()
    return method


def make_step(method: Method, **loop) -> GANStep:
    ctx = method.ctx
    spec = LoopSpec(**{"batch": 4, "lr": 0.0, "r1_gamma": 1.0, "r1_every": 1,
                       "path_regularize": 0.0, "mixing": 0.0, **loop})
    return GANStep(ctx.g, ctx.d, copy.deepcopy(ctx.g), method, spec)


# --- flips ---------------------------------------------------------------------------------------


def test_real_batches_mirror_about_half_the_shots_and_never_without_flip():
    shots = torch.rand(10, 3, 8, 8)  # asymmetric images: a mirror differs from every shot
    mirrored = shots.flip(3)
    torch.manual_seed(0)
    n_flipped = n = 0
    for _ in range(200):
        batch = real_batch(shots, 4, flip=True)
        for image in batch:
            is_shot = any(torch.equal(image, s) for s in shots)
            is_mirror = any(torch.equal(image, s) for s in mirrored)
            assert is_shot != is_mirror  # each is exactly one shot, as drawn or mirrored
            n_flipped += is_mirror
            n += 1
    # Binomial(800, 0.5): 400 +- 14 (1 std); 4.5 std either side
    assert 336 < n_flipped < 464
    for _ in range(20):
        assert all(any(torch.equal(im, s) for s in shots)
                   for im in real_batch(shots, 4, flip=False))


# --- R1 follows the method's logits path (CDC train.py:262-274) -------------------------------


def _r1(logits_of, real: torch.Tensor) -> torch.Tensor:
    x = real.detach().requires_grad_(True)
    logits = logits_of(x).reshape(len(x), -1).mean(1)
    (grad,) = torch.autograd.grad(logits.sum(), x)
    return grad.pow(2).reshape(len(x), -1).sum(1).mean()


@pytest.mark.parametrize(("iteration", "level"), [(1, "patch"), (4, "image")])
def test_r1_is_taken_on_the_iterations_own_discriminator_path(iteration, level):
    method = build("cdc", patch_resolution=8)
    d, head = method.ctx.d, method.scheme.head
    real = method.ctx.shots[:4]

    def patch(x):  # the head on block 1's residual branch, written out
        return head(d.convs[1].conv2(d.convs[1].conv1(d.convs[0](x)))).flatten(1)

    expected = _r1(patch if level == "patch" else d, real)
    other = _r1(d if level == "patch" else patch, real)
    logged = make_step(method)(iteration, real)  # lr 0: D is the same at R1 time
    torch.testing.assert_close(logged["loss_r1"], expected)
    assert not torch.allclose(logged["loss_r1"], other)


# --- ADA ---------------------------------------------------------------------------------------


class Spy(Method):
    """Plain fine-tuning that records what D is shown."""

    def __init__(self, ctx):
        super().__init__(Method.Params(), ctx)
        self.seen: list[torch.Tensor] = []

    def d_logits(self, step, images):
        self.seen.append(images.detach().clone())
        return super().d_logits(step, images)


def test_ada_augments_real_and_fake_before_d_and_moves_p_from_the_real_logits():
    ctx = context()
    spy = Spy(ctx)
    step = make_step(spy, augment="ada", ada_every=4, ada_length=40, r1_gamma=0.0)
    real = ctx.shots[:4]
    step(1, real)
    shown_real = spy.seen[0]
    assert torch.equal(shown_real, real)  # p was 0 at the D step: the identity
    # The update saw 4 images (one adjustment): p moved by 4 / 40 in the direction of
    # sign(r_t - 0.6), r_t the mean sign of D's real logits.
    with torch.no_grad():
        r_t = torch.sign(ctx.d(real)).mean().item()
    assert step.augment.p == pytest.approx(0.1 if r_t > 0.6 else 0.0)

    spy.seen.clear()
    fixed = make_step(spy, augment="ada", ada_p=1.0, r1_gamma=0.0)  # a fixed p = 1
    fixed(1, real)
    assert fixed.augment.p == 1.0  # not adaptive
    d_real, d_fake, g_fake = spy.seen
    assert not torch.allclose(d_real, real)  # D sees augmented reals ...
    assert d_real.shape == real.shape and d_fake.shape == g_fake.shape == real.shape


def test_tgan_ada_runs_with_ada_on_and_other_methods_as_configured():
    specs = {s.method: s for s in run_specs(load_experiment(
        None, ['methods=["tgan", "tgan_ada"]', "train.ada_target=0.5"]))}
    assert specs["tgan"].train.augment == "none"
    assert specs["tgan_ada"].train.augment == "ada"
    assert specs["tgan_ada"].train.ada_target == 0.5  # the experiment's ADA settings apply


# --- recorded loss means and EWC's gradient norms ---------------------------------------------


def test_training_stats_are_means_since_the_last_row():
    stats = TrainingStats()
    for v in (1.0, 2.0, 6.0):
        stats.add({"loss_d_adv": torch.tensor(v)})
    stats.add({"loss_r1": torch.tensor(5.0)})
    assert stats.means() == {"loss_d_adv": 3.0, "loss_r1": 5.0}
    assert stats.means() == {}  # restarted


def test_ewc_gradient_norms_follow_the_penalty_formula():
    """d/dtheta lam * sum F (theta - theta*)^2 = 2 lam F (theta - theta*)."""
    method = build("ewc", context(drift=0.01), n_fisher=2, lam=3.0)
    g = method.ctx.g
    expected = torch.sqrt(sum(
        (2 * 3.0 * method.fisher[k] * (p.detach() - method.anchor[k])).pow(2).sum()
        for k, p in g.named_parameters()))
    logged = make_step(method, r1_gamma=0.0)(1, method.ctx.shots[:4])
    torch.testing.assert_close(logged["grad_norm_ewc"], expected)
    assert logged["grad_norm_g_adv"] > 0
    assert {"loss_d_adv", "loss_g_adv", "loss_ewc"} <= set(logged)


# --- DCL: one contrastive batch per iteration ------------------------------------------------


def test_dcl_terms_share_one_contrastive_batch_and_the_g_term_gradient_is_exact(monkeypatch):
    calls = []
    real_info_nce = info_nce

    def spy(*args, **kwargs):
        calls.append(args)
        return real_info_nce(*args, **kwargs)

    monkeypatch.setattr(dcl_module, "info_nce", spy)
    dcl = build("dcl", context(drift=0.05), d_features="blocks")
    g, step = dcl.ctx.g, Step(1, real=dcl.ctx.shots[:4])
    state = torch.get_rng_state()
    g.requires_grad_(False)  # as in the D step
    dcl.d_extra_losses(step, None)
    g.requires_grad_(True)  # as in the G step
    loss = dcl.g_extra_losses(step, None)["dcl_g"]
    got = torch.autograd.grad(loss, list(g.parameters()), allow_unused=True)

    # Replay: z, each generator's noise, the D map's index, then the G layer; all fresh.
    torch.set_rng_state(state)
    z = torch.randn(dcl.params.contrastive_batch, g.style_dim)
    noise_s, noise_t = g.make_noise(len(z)), g.make_noise(len(z))
    index = int(torch.randint(1, len(dcl.ctx.d.convs), ()).item())
    layer = int(torch.randint(1, g.num_layers, ()).item())
    with torch.no_grad():
        img_s, _, feats_s = dcl.ctx.g_source([z], noise=noise_s, return_features=True)
    img_t, _, feats_t = g([z], noise=noise_t, return_features=True)
    expected = dcl.params.lambda_g * real_info_nce(feats_t[layer], feats_s[layer],
                                                   feats_s[layer], dcl.params.tau, True)
    want = torch.autograd.grad(expected, list(g.parameters()), allow_unused=True)
    torch.testing.assert_close(loss, expected)
    assert [a is None for a in got] == [b is None for b in want]
    for a, b in zip(got, want, strict=True):
        if a is not None:
            torch.testing.assert_close(a, b)
    # the D term's positives are D's features of the same G_s(z) the G term used
    with torch.no_grad():
        torch.testing.assert_close(calls[0][1], dcl.ctx.d.features(img_s)[index])


# --- the trajectory carries the loop's numbers ------------------------------------------------


@pytest.mark.slow
def test_rows_record_loss_means_gradient_norms_and_ada_p(tmp_path):
    source = make_source_checkpoint(tmp_path / "tiny.pt")
    ewc = run_adaptation(tiny_spec(source, "ewc"), tmp_path / "ewc")
    rows = load_trajectories(ewc).set_index("iteration")
    assert rows.loc[0, ["loss_d_adv", "loss_ewc"]].isna().all()  # nothing trained yet
    for column in ("loss_d_adv", "loss_g_adv", "loss_r1", "loss_ewc", "grad_norm_ewc",
                   "grad_norm_g_adv"):
        assert rows.loc[[2, 4], column].notna().all(), column
    assert (rows.loc[[2, 4], "grad_norm_g_adv"] > 0).all()

    spec = tiny_spec(source, "tgan_ada")
    spec = replace(spec, train=replace(spec.train, augment="ada", ada_every=4, ada_length=40))
    ada = load_trajectories(run_adaptation(spec, tmp_path / "ada")).set_index("iteration")
    # one adjustment of 4 / 40 per iteration (4 images each), clamped to [0, 1]
    steps = ada["ada_p"].to_numpy() / 0.1
    assert ada.loc[0, "ada_p"] == 0.0
    assert all(abs(s - round(s)) < 1e-9 for s in steps)
    assert "loss_ewc" not in ada.columns
