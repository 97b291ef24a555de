"""AdAM: importance from a known Fisher, the probe Fisher itself, the modulation's maths, the two
stages' masks, resume.

Expectations are written out by hand or from the definition W * (1 + v u^T), element by element,
never with the code under test.
"""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from _tiny_world import run_crashing_at, tiny_spec
from torch.func import functional_call

from adaptscope import load_trajectories
from adaptscope.errors import ConfigError
from adaptscope.methods import MethodContext, get_method
from adaptscope.methods.adam import AdAM, Modulations, importance
from adaptscope.models import Discriminator, Generator
from adaptscope.spec import LoopSpec, ScheduleSpec
from adaptscope.train.loop import run_adaptation
from adaptscope.train.step import GANStep

CH = {4: 16, 8: 16, 16: 8}


pytestmark = pytest.mark.usefixtures("one_thread")


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_importance_from_a_known_fisher():
    fisher = {  # scores written out below
        "u:a": t(0, 2), "v:a": t(0, 2),  # mean(F_u) 1 + F_v -> 1, 3
        "u:b": t(2, 2), "v:b": t(1, 5),  # 2 + F_v -> 3, 7
        "u:c": t(1, 3, 2), "v:c": t(0, 4), "b:cb": t(2, 0),  # (2 + F_v + F_b) / 2 -> 2, 3
        "u:s": t(1), "v:s": t(0.5, 3),  # no bias: 1 + F_v -> 1.5, 4
    }
    groups = [[("a", None), ("b", None)], [("c", "cb"), ("s", None)]]
    keep = importance(fisher, groups, 50.0)
    # group 1: scores 1, 3, 3, 7, median 3, strictly above it: b's second unit only
    assert keep["a"].tolist() == [False, False] and keep["b"].tolist() == [False, True]
    # group 2 (its own cut): scores 2, 3, 1.5, 4, median 2.5
    assert keep["c"].tolist() == [False, True] and keep["s"].tolist() == [False, True]
    # the 75th percentile of 1.5, 2, 3, 4 interpolates to 3 + 0.25 * (4 - 3) = 3.25
    keep = importance(fisher, groups[1:], 75.0)
    assert keep["c"].tolist() == [False, False] and keep["s"].tolist() == [False, True]


def networks(seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    return Generator(16, 32, 2, channels=CH), Discriminator(16, channels=CH)


def test_modulation_is_w_times_one_plus_v_u_and_zero_gives_the_source_exactly():
    g, _ = networks()
    kernels, biases = ["convs.0.conv.weight", "style.1.weight"], ["convs.0.activate.bias"]
    mod = Modulations(g, kernels, biases, std=1.0)
    with torch.no_grad():
        mod.b["convs:0:activate:bias"].fill_(0.5)
    out, params = mod.overrides(g), dict(g.named_parameters())
    w, u, v = params[kernels[0]], mod.u["convs:0:conv:weight"], mod.v["convs:0:conv:weight"]
    _, n_out, n_in, k, _ = w.shape
    expected = torch.empty_like(w)
    for o in range(n_out):  # v over output filters, u over (input channel, row, column)
        for i in range(n_in):
            for a in range(k):
                for c in range(k):
                    m = v[o] * u[i * k * k + a * k + c]
                    expected[0, o, i, a, c] = w[0, o, i, a, c] * (1 + m)
    torch.testing.assert_close(out[kernels[0]], expected)
    w2, u2, v2 = params[kernels[1]], mod.u["style:1:weight"], mod.v["style:1:weight"]
    torch.testing.assert_close(out[kernels[1]], w2 * (1 + v2[:, None] * u2[None, :]))
    torch.testing.assert_close(out[biases[0]], params[biases[0]] + 0.5)

    with torch.no_grad():  # u = 0 or v = 0: the source weights, bit for bit
        mod.u["convs:0:conv:weight"].zero_()
        mod.v["style:1:weight"].zero_()
        mod.b["convs:0:activate:bias"].zero_()
    out = mod.overrides(g)
    for name in kernels + biases:
        assert torch.equal(out[name], params[name]), name


def built(probe: int = 2, n_fisher: int = 3, seed: int = 0) -> tuple[AdAM, GANStep]:
    """AdAM set up as the loop does it, with g_ema unlike g (a source saved with both)."""
    g, d = networks(seed)
    g_ema = copy.deepcopy(g)
    with torch.no_grad():
        for p in g_ema.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ctx = MethodContext(g=g, d=d, g_ema=g_ema.eval().requires_grad_(False),
                        g_source=copy.deepcopy(g).requires_grad_(False),
                        d_source=copy.deepcopy(d).requires_grad_(False),
                        shots=torch.rand(10, 3, 16, 16) * 2 - 1, mixing=0.0)
    method = get_method("adam")(AdAM.Params(probe_iterations=probe, n_fisher=n_fisher), ctx)
    method.build()
    method.ema_g_modules = [copy.deepcopy(m).eval().requires_grad_(False)
                            for m in method.extra_g_modules()]
    step = GANStep(g, d, ctx.g_ema, method,
                   LoopSpec(batch=4, r1_gamma=0.01, r1_every=2, path_regularize=2.0,
                            path_every=2, mixing=0.0))
    for p in step.g_params:
        p.requires_grad_(True)
    method.setup()
    return method, step


def test_zero_modulations_give_the_plain_generators_image_and_ds_logits():
    method, _ = built()
    g, d = method.ctx.g, method.ctx.d
    mods = method.extra_g_modules()
    with torch.no_grad():
        for m in mods + method.extra_d_modules():
            for p in m.v.values():
                p.zero_()
        z = torch.randn(3, g.style_dim)
        noise = g.make_noise(3)
        img, _ = method.generate(g, mods, [z], noise=noise)
        assert torch.equal(img, g([z], noise=noise)[0])
        assert torch.equal(method.d_logits(None, img), d(img))


def modulated(net: torch.nn.Module, leaves: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`net`'s parameters under modulations keyed 'u:name', 'v:name', 'b:name', from the
    definition: W * (1 + v u^T) with v over output units, bias + b."""
    params, out = dict(net.named_parameters()), {}
    for key, t in leaves.items():
        kind, name = key.split(":", 1)
        if kind == "b":
            out[name] = params[name] + t
        elif kind == "u":
            w = params[name]
            out[name] = w * (1 + torch.outer(leaves["v:" + name], t).view(w.shape))
    return out


def test_probe_fisher_is_the_mean_squared_per_sample_gradient_of_each_networks_loss():
    """G's term: -log D(G(z)) through g_ema and the probe modulations' moving average, by the
    modulated D; D's term: D's logistic loss on one (randomly mirrored) shot and that fake, by
    D's live probe modulations. Both recomputed per sample with autograd, the draws replayed."""
    method, _ = built(n_fisher=3)
    ctx = method.ctx
    live_g, ema_g, live_d = method.mods["g"][0], method.ema_g_modules[0], method.mods["d"][0]
    with torch.no_grad():  # modulations far from zero, and an average unlike the live ones
        for m in (live_g, ema_g, live_d):
            for p in m.parameters():
                p.copy_(0.3 * torch.randn_like(p))

    def leaves(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {f"{kind}:{key.replace(':', '.')}": p.detach().clone().requires_grad_(True)
                for kind in ("u", "v", "b") for key, p in getattr(module, kind).items()}

    g_leaves, d_leaves = leaves(ema_g), leaves(live_d)
    # every G parameter but the constant input is modulated, the mapping network's too; in D
    # the convs of its blocks, not its final layers
    g_names = [n for n, _ in ctx.g.named_parameters() if n != "input.input"]
    shifted = [n for n in g_names if n.endswith(("bias", "noise.weight"))]
    assert set(g_leaves) == ({"b:" + n for n in shifted}
                             | {f"{k}:{n}" for n in g_names if n not in shifted for k in "uv"})
    assert all(n.split(":", 1)[1].startswith("convs.") for n in d_leaves)

    torch.manual_seed(7)
    fisher = method._fisher()
    torch.manual_seed(7)  # the same draws: z, a shot, its mirroring, G's noise maps
    expected = {"g": {k: torch.zeros_like(v) for k, v in g_leaves.items()},
                "d": {k: torch.zeros_like(v) for k, v in d_leaves.items()}}
    for _ in range(3):
        z = torch.randn(1, ctx.g.style_dim)
        real = ctx.shots[torch.randint(len(ctx.shots), (1,))]
        real = real.flip(3) if torch.rand(()).item() < 0.5 else real
        fake, _ = functional_call(ctx.g_ema, modulated(ctx.g_ema, g_leaves), ([z],))

        def d(x: torch.Tensor) -> torch.Tensor:
            return functional_call(ctx.d, modulated(ctx.d, d_leaves), (x,))

        g_loss = -F.logsigmoid(d(fake)).sum()  # -log D(G(z))
        d_loss = -F.logsigmoid(d(real)).sum() - F.logsigmoid(-d(fake)).sum()
        for which, loss, group in (("g", g_loss, g_leaves), ("d", d_loss, d_leaves)):
            grads = torch.autograd.grad(loss, list(group.values()), retain_graph=True)
            for k, grad in zip(group, grads, strict=True):
                expected[which][k] += grad.pow(2) / 3
    for which in ("g", "d"):
        assert fisher[which].keys() == expected[which].keys()
        for k, value in fisher[which].items():
            torch.testing.assert_close(value, expected[which][k], rtol=1e-4, atol=1e-12,
                                       msg=f"{which} {k}")
    assert fisher["g"]["u:style.1.weight"].sum() > 0  # the mapping network's modulations count
    assert fisher["d"]["v:convs.1.conv1.0.weight"].sum() > 0


def same(a: torch.nn.Module, b: torch.nn.Module, skip: str = "§") -> bool:
    return all(torch.equal(p, q) for (n, p), (_, q) in
               zip(a.named_parameters(), b.named_parameters(), strict=True)
               if not n.startswith(skip))


def test_probing_trains_only_the_modulations_and_ds_final_layers():
    method, step = built(probe=3)
    ctx = method.ctx
    probe_g, adapt_g = [copy.deepcopy(m) for m in method.extra_g_modules()]
    final = copy.deepcopy(ctx.d.final_linear)
    for i in range(2):
        step(i, ctx.shots[:4])
    assert method.stage(2) == "probe" and method.stage(3) == "adapt"
    assert same(ctx.g, ctx.g_source) and same(ctx.d, ctx.d_source, skip="final")
    assert not same(ctx.d.final_linear, final)
    assert not same(method.extra_g_modules()[0], probe_g)
    assert same(method.extra_g_modules()[1], adapt_g)


def test_after_the_switch_important_kernels_keep_the_source_and_the_rest_fine_tune():
    method, step = built(probe=2)
    ctx = method.ctx
    g_ema_source = copy.deepcopy(ctx.g_ema)
    for i in range(2):  # the switch runs in the hook after iteration 1
        step(i, ctx.shots[:4])
    assert method.switched
    assert same(ctx.g_ema, g_ema_source) and same(ctx.d, ctx.d_source)  # started anew
    assert not step.g_opt.state and not step.d_opt.state  # with fresh optimisers
    for i in range(2, 6):
        step(i, ctx.shots[:4])
    for which, net, source in (("g", ctx.g, ctx.g_source), ("d", ctx.d, ctx.d_source)):
        params, src = dict(net.named_parameters()), dict(source.named_parameters())
        mods = [method.mods[which][1]] + ([method.ema_g_modules[1]] if which == "g" else [])
        moved = 0
        for group in method.ranked[which]:
            units = torch.cat([method.keep[which][w] for w, _ in group])
            assert units.any() and not units.all(), (which, "quantile 50 splits each group")
            for w, b in group:
                keep = method.keep[which][w]
                for name in [w] + ([b] if b else []):
                    p, s = params[name], src[name]
                    p, s = (p[0], s[0]) if p.dim() == 5 else (p, s)
                    assert torch.equal(p[keep], s[keep]), name
                    moved += int(not torch.equal(p[~keep], s[~keep]))
                for m in mods:  # unimportant units: modulation zero, in the average too
                    assert (m.v[w.replace(".", ":")][~keep] == 0).all(), w
                    if b:
                        assert (m.b[b.replace(".", ":")][~keep] == 0).all(), b
            v = torch.cat([method.mods[which][1].v[w.replace(".", ":")] for w, _ in group])
            assert (v[units] != 0).all(), "important units adapt by modulation"
        assert moved > 0, f"{which}: the unimportant kernels fine-tune"


def test_the_stage_column_shows_probing_then_adaptation(source_checkpoint, tmp_path):
    df = load_trajectories(run_adaptation(tiny_spec(source_checkpoint, "adam"), tmp_path / "r"))
    assert df["iteration"].tolist() == [0, 2, 4]
    assert df["stage"].tolist() == ["probe", "adapt", "adapt"]


@pytest.mark.slow
def test_a_resume_before_the_switch_probes_again_to_the_same_rows(source_checkpoint,
                                                                  tmp_path):
    """Probing ends after iteration 2, after the checkpoint at 2: the resumed run probes the
    last step again and draws the same Fisher (build() keeps the source's g_ema to reset to)."""
    spec = tiny_spec(source_checkpoint, "adam", method_params={"probe_iterations": 3,
                                                               "n_fisher": 4},
                     schedule=ScheduleSpec(iterations=6, eval_every=2))
    full = load_trajectories(run_adaptation(spec, tmp_path / "full")).drop(columns="wall_time_s")
    run_crashing_at(spec, tmp_path / "crashed", 3)
    run_adaptation(spec, tmp_path / "crashed")
    resumed = load_trajectories(tmp_path / "crashed").drop(columns="wall_time_s")
    assert resumed["stage"].tolist() == ["probe", "probe", "adapt", "adapt"]
    pd.testing.assert_frame_equal(resumed, full)


@pytest.mark.parametrize("key,value", [("probe_iterations", 0), ("n_fisher", 0),
                                       ("quantile", 101.0), ("init_std", 0.0)])
def test_bad_settings_fail_when_loaded(key, value):
    with pytest.raises(ConfigError, match=f"adam.{key}"):
        AdAM.Params(**{key: value})
