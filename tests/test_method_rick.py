"""RICK: filter importance from a known Fisher, the pruning / preservation sets for given
percentiles, the Fisher at the moving averages, the masks on a tiny generator in training, and
the estimation schedule. Expectations are written out by hand or computed with autograd on copies
of the networks, never with the helpers under test."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from adaptscope.errors import ConfigError
from adaptscope.methods import MethodContext
from adaptscope.methods.rick import RICK, Unit, decide, filter_importance
from adaptscope.models import Discriminator, Generator
from adaptscope.spec import LoopSpec
from adaptscope.train.step import GANStep

CH = {4: 16, 8: 16, 16: 16}


pytestmark = pytest.mark.usefixtures("one_thread")


def context(seed: int = 0) -> MethodContext:
    torch.manual_seed(seed)
    g, d = Generator(16, 32, 2, channels=CH), Discriminator(16, channels=CH)
    return MethodContext(g=g, d=d, g_ema=copy.deepcopy(g).requires_grad_(False),
                         g_source=copy.deepcopy(g).requires_grad_(False),
                         d_source=copy.deepcopy(d).requires_grad_(False),
                         shots=torch.rand(10, 3, 16, 16) * 2 - 1, mixing=0.0)


def make(ctx: MethodContext | None = None, **params) -> RICK:
    method = RICK(RICK.Params(**params), ctx or context())
    method.build()
    method.setup()
    return method


def trainer(method: RICK) -> GANStep:
    return GANStep(method.ctx.g, method.ctx.d, method.ctx.g_ema, method,
                   LoopSpec(batch=2, r1_gamma=0.01, r1_every=2, path_regularize=2.0,
                            path_every=2, mixing=0.0))


def filters(p: torch.Tensor) -> torch.Tensor:
    """Filters first: G's kernels are (1, out, in, k, k), every other parameter (out, ...)."""
    return p.detach().transpose(0, 1) if p.ndim == 5 else p.detach()


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


# --- importance and decisions on small tensors ----------------------------------------------


def test_importance_per_filter_from_a_known_fisher():
    conv = torch.zeros(1, 3, 2, 3, 3)  # G kernel: filter o, input i holds 10 o + i
    for o in range(3):
        for i in range(2):
            conv[0, o, i] = 10 * o + i
    assert filter_importance({"w": conv}, Unit("g_conv", ("w",))).tolist() == [0.5, 10.5, 20.5]
    # modulation: row means 2 and 4, biases 4 and 0 -> (2 + 4) / 2, (4 + 0) / 2
    fc = {"w": torch.tensor([[1.0, 3.0], [2.0, 6.0]]), "b": torch.tensor([4.0, 0.0])}
    assert filter_importance(fc, Unit("g_fc", ("w", "b"))).tolist() == [3.0, 2.0]
    # D conv (out, in, k, k): filter means 1.5 and 5.5, with biases 0.5, 1.5 -> 1.0, 3.5
    d = {"w": torch.arange(8.0).reshape(2, 1, 2, 2), "b": torch.tensor([0.5, 1.5])}
    assert filter_importance(d, Unit("d_conv", ("w", "b"))).tolist() == [1.0, 3.5]
    assert filter_importance(d, Unit("d_conv", ("w",), strict=True)).tolist() == [1.5, 5.5]


def test_percentiles_are_in_percent_and_pooled_across_layers():
    # Importances 1..1000 split over two layers of one pool (odd values in one, even in the
    # other). Linear percentiles of 1..1000: the 0.1st is 1 + 0.001 * 999 = 1.999, the 10th
    # 1 + 0.1 * 999 = 100.9, the 40th 1 + 0.4 * 999 = 400.6.
    odd, even = torch.arange(1.0, 1001, 2), torch.arange(2.0, 1001, 2)
    pool = [(Unit("g_conv", ("a",)), odd), (Unit("g_conv", ("b",)), even)]

    def chosen(masks):
        return sorted(torch.cat([f[m] for (_, f), m in zip(pool, masks, strict=True)]).tolist())

    default = RICK.Params()  # the code's prune_quantile 0.1 -> np.percentile(q=0.1)
    out = decide(pool, default.preserve_percentile, default.prune_percentile)
    assert chosen([m for _, m in out]) == [1.0]  # one filter of 1000: 0.1 %, not 10 %
    assert chosen([k for k, _ in out]) == [float(v) for v in range(401, 1001)]
    out = decide(pool, 40.0, 10.0)  # a true 10 %
    assert chosen([m for _, m in out]) == [float(v) for v in range(1, 101)]


def test_pools_are_ranked_apart_and_skip_convs_prune_below_the_line_only():
    g = (Unit("g_conv", ("a",)), torch.arange(1.0, 11))
    d = (Unit("d_conv", ("b",)), torch.arange(101.0, 111))
    (_, g_pruned), (_, d_pruned) = decide([g, d], 90.0, 10.0)  # lines 1.9 and 101.9
    assert g_pruned.nonzero().flatten().tolist() == [0]
    assert d_pruned.nonzero().flatten().tolist() == [0]
    # values 1, 2 | 2, 3: the 50th percentile is 2; a conv at the line is pruned, a skip is not
    conv = (Unit("d_conv", ("c", "cb")), torch.tensor([1.0, 2.0]))
    skip = (Unit("d_conv", ("s",), strict=True), torch.tensor([2.0, 3.0]))
    (_, conv_pruned), (_, skip_pruned) = decide([conv, skip], 50.0, 50.0)
    assert conv_pruned.tolist() == [True, True] and skip_pruned.tolist() == [False, False]


def test_percentile_settings_are_checked():
    with pytest.raises(ConfigError, match="rick.prune_percentile"):
        RICK.Params(prune_percentile=50.0, preserve_percentile=40.0)
    with pytest.raises(ConfigError, match="rick.preserve_percentile"):
        RICK.Params(preserve_percentile=140.0)


# --- the Fisher ----------------------------------------------------------------------------------


def test_fisher_is_the_mean_squared_per_sample_gradient_at_the_moving_averages():
    ctx = context()
    ctx.shots = torch.full((10, 3, 16, 16), 0.3)  # one flip-invariant shot: a fixed real image
    with torch.no_grad():
        for n, p in ctx.g_ema.named_parameters():  # G_ema differs from G; no noise reaches it
            p.copy_(torch.zeros_like(p) if n.endswith("noise.weight") else
                    p + 0.1 * torch.randn_like(p))
    g_ema = copy.deepcopy(ctx.g_ema).requires_grad_(True)
    d_ema = copy.deepcopy(ctx.d).requires_grad_(True)  # D's moving average starts at D
    method = make(ctx, warmup_iter=5, n_fisher=3)
    with torch.no_grad():
        for p in list(ctx.d.parameters()) + list(ctx.g.parameters()):
            p.add_(0.1 * torch.randn_like(p))  # the training networks are not what is measured
    fisher = method.fisher()

    g_par, d_par = dict(g_ema.named_parameters()), dict(d_ema.named_parameters())
    expected = {"g": {n: 0.0 for n in fisher["g"]}, "d": {n: 0.0 for n in fisher["d"]}}
    for z in method.fisher_z:
        fake, _ = g_ema([z[None]])
        g_loss = F.softplus(-d_ema(fake)).mean()  # -log sigmoid D(G(z))
        d_loss = F.softplus(-d_ema(ctx.shots[:1])).mean() + F.softplus(d_ema(fake)).mean()
        for net, loss, par in (("g", g_loss, g_par), ("d", d_loss, d_par)):
            names = list(expected[net])
            grads = torch.autograd.grad(loss, [par[n] for n in names], retain_graph=True)
            for n, gr in zip(names, grads, strict=True):
                expected[net][n] = expected[net][n] + gr.pow(2) / len(method.fisher_z)
    assert "convs.3.conv.modulation.bias" in fisher["g"] and "convs.2.skip.1.weight" in fisher["d"]
    for net in ("g", "d"):
        for n, value in fisher[net].items():
            torch.testing.assert_close(value, expected[net][n], rtol=1e-4, atol=1e-12)


# --- the masks in training ----------------------------------------------------------------------


def test_pruned_filters_are_zero_and_preserved_filters_keep_their_source_weights():
    method = make(warmup_iter=0, fisher_every=100, n_fisher=2, prune_percentile=10.0,
                  preserve_percentile=50.0)  # estimated in setup, before the first step
    ctx = method.ctx
    source = {"g": snapshot(ctx.g), "d": snapshot(ctx.d)}
    ema_source = snapshot(ctx.g_ema)
    step = trainer(method)
    for it in range(3):
        step(it, ctx.shots[:2])
    decay = LoopSpec().ema_decay
    for net, model in (("g", ctx.g), ("d", ctx.d)):
        params = dict(model.named_parameters())
        n_pruned = n_kept = n_moved = 0
        for name, pruned in method.pruned[net].items():
            kept = method.preserved[net][name] & ~pruned
            now, before = filters(params[name]), filters(source[net][name])
            assert (now[pruned] == 0).all(), name
            assert torch.equal(now[kept], before[kept]), name
            n_moved += int((now[~pruned & ~kept] != before[~pruned & ~kept]).any())
            n_pruned, n_kept = n_pruned + int(pruned.sum()), n_kept + int(kept.sum())
            if net == "g":  # G_ema is not zeroed: it decays towards G's zeros
                ema = filters(dict(ctx.g_ema.named_parameters())[name])
                torch.testing.assert_close(ema[pruned], filters(ema_source[name])[pruned]
                                           * decay ** 3)
        assert n_pruned > 0 and n_kept > 0 and n_moved > 0, net


def test_after_the_warm_up_g_trains_its_convs_and_d_all_but_its_first_block():
    """From the first step after the warm-up: G's mapping, constant input, first layer and ToRGBs
    stay the source's, with no optimiser state, and D's first block too; in the ranked units
    preserved filters keep their weights and pruned ones stay zero for good, while every other
    parameter of G's convs and of D's later blocks and final layers moves."""
    method = make(warmup_iter=1, fisher_every=100, n_fisher=2, prune_percentile=10.0,
                  preserve_percentile=50.0)  # estimated after step 0, for step 1 on
    ctx = method.ctx
    step = trainer(method)
    step(0, ctx.shots[:2])  # the warm-up step
    before = {"g": snapshot(ctx.g), "d": snapshot(ctx.d)}
    source = {"g": snapshot(ctx.g_source), "d": snapshot(ctx.d_source)}
    frozen = {"g": lambda n: not n.startswith("convs."), "d": lambda n: n.startswith("convs.0.")}
    for it in (1, 2):
        step(it, ctx.shots[:2])
        for net, model in (("g", ctx.g), ("d", ctx.d)):
            opt = step.g_opt if net == "g" else step.d_opt
            masked, counts = method.pruned[net].keys(), [0, 0, 0]  # pruned, kept, moved
            for name, p in model.named_parameters():
                if frozen[net](name):
                    assert torch.equal(p, source[net][name]), (it, name)
                    assert p not in opt.state, name
                elif name in masked:
                    pruned = method.pruned[net][name]
                    kept = method.preserved[net][name] & ~pruned
                    now, start = filters(p), filters(before[net][name])
                    assert (now[pruned] == 0).all(), (it, name)
                    assert torch.equal(now[kept], start[kept]), (it, name)
                    free = ~pruned & ~kept
                    moved = (now[free] != start[free]).reshape(int(free.sum()), -1).any(1)
                    counts = [counts[0] + int(pruned.sum()), counts[1] + int(kept.sum()),
                              counts[2] + int(moved.sum())]
                else:
                    assert not torch.equal(p, before[net][name]), (it, name)
            assert all(counts), (it, net, counts)
            before[net] = snapshot(model)


def test_pruned_sets_accumulate_and_preserved_sets_are_replaced():
    method = make(warmup_iter=5, fisher_every=100, n_fisher=1, prune_percentile=10.0,
                  preserve_percentile=50.0)
    nets = {"g": method.ctx.g, "d": method.ctx.d}

    def ranked(reverse: bool) -> dict[str, dict[str, torch.Tensor]]:
        """A Fisher equal to 1 + the filter's index (or 16 - index) throughout each filter."""
        out: dict[str, dict[str, torch.Tensor]] = {}
        for net, model in nets.items():
            out[net] = {}
            for n, p in model.named_parameters():
                rank = torch.arange(filters(p).shape[0], dtype=p.dtype)
                rank = rank.flip(0) if reverse else rank
                shape = [1] * p.ndim
                shape[1 if p.ndim == 5 else 0] = -1
                out[net][n] = (rank + 1).reshape(shape).expand_as(p).clone()
        return out

    # Every layer has 16 filters with importances 1..16, so each pool holds each value once per
    # layer: G's 4 layers (64 values) and D's 6 units (96): the 10th percentile is 2 in both
    # (sorted positions 6.3 and 9.5), the 50th 8.5. Pruned: importance <= 2 (< 2 for skips),
    # preserved: > 8.5.
    method.update_masks(ranked(False))  # importance = index + 1
    method.update_masks(ranked(True))  # importance = 16 - index: new preserved, more pruned
    for net in ("g", "d"):
        for name, pruned in method.pruned[net].items():
            expected = [0, 15] if ".skip." in name else [0, 1, 14, 15]
            assert pruned.nonzero().flatten().tolist() == expected, name
            assert method.preserved[net][name].nonzero().flatten().tolist() == list(range(8))
    step = trainer(method)
    for it in (5, 6):
        step(it, method.ctx.shots[:2])
    for net, model in nets.items():
        params = dict(model.named_parameters())
        for name, pruned in method.pruned[net].items():
            assert (filters(params[name])[pruned] == 0).all(), name


def test_masks_are_re_estimated_at_the_scheduled_iterations_only():
    method = make(warmup_iter=2, fisher_every=3, n_fisher=1)
    assert method.pruned == {"g": {}, "d": {}}  # nothing estimated before the warm-up ends
    assert [method.stage(i) for i in range(4)] == ["warmup", "warmup", "adapt", "adapt"]
    ctx, calls, current = method.ctx, [], {}
    estimate = method.estimate
    method.estimate = lambda: (calls.append(current["it"]), estimate())
    g0, d0 = snapshot(ctx.g), snapshot(ctx.d)
    step = trainer(method)
    for it in range(9):
        current["it"] = it
        step(it, ctx.shots[:2])
        if it == 1:  # warm-up: G does not move, D trains its final layers only
            assert all(torch.equal(p, g0[n]) for n, p in ctx.g.named_parameters())
            moved = {n for n, p in ctx.d.named_parameters() if not torch.equal(p, d0[n])}
            assert moved and all(n.startswith("final") for n in moved)
            assert step.mean_path_length.item() == 0.0  # no path length while G is still
    # the masks of iterations 2, 5 and 8 are estimated after the step before each
    assert calls == [1, 4, 7]
    assert make(warmup_iter=0, n_fisher=1).pruned["g"]  # warm-up 0: estimated before step 0


def test_state_round_trips_through_a_checkpoint(tmp_path):
    """D's moving average, the fixed latents and both mask sets come back from a checkpoint
    file (loaded with weights_only), so a resumed run estimates what an uninterrupted one does."""
    method = make(warmup_iter=1, fisher_every=1, n_fisher=2)
    step = trainer(method)
    decay = method.params.d_ema_decay
    ema = snapshot(method.ctx.d)  # D's moving average, by its definition, starting at D
    for it in range(3):
        step(it, method.ctx.shots[:2])
        ema = {n: decay * ema[n] + (1 - decay) * p.detach()
               for n, p in method.ctx.d.named_parameters()}
    for n, p in method.d_ema.named_parameters():
        torch.testing.assert_close(p, ema[n])
    torch.save(method.state_dict(), tmp_path / "state.pt")
    resumed = RICK(method.params, context(seed=1))  # other weights until the state is loaded
    resumed.build()
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert torch.equal(resumed.fisher_z, method.fisher_z)
    for a, b in zip(resumed.d_ema.parameters(), method.d_ema.parameters(), strict=True):
        assert torch.equal(a, b)
    for masks in ("preserved", "pruned"):
        for net in ("g", "d"):
            ours, theirs = getattr(resumed, masks)[net], getattr(method, masks)[net]
            assert ours.keys() == theirs.keys() and len(ours) > 0
            assert all(torch.equal(ours[n], theirs[n]) for n in ours)
