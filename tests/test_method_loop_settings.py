"""Per-method loop and schedule settings through one mechanism: what a method's code fixes
(`Method.loop_settings`: BSA's Adam betas and lr, RICK's batch 2), then the experiment's own
`[method.train]` / `[method.schedule]` tables, for that method's runs only."""

from __future__ import annotations

import copy

import pytest
import torch

from adaptscope.errors import ConfigError
from adaptscope.methods.base import Method, MethodContext
from adaptscope.models import Discriminator, Generator
from adaptscope.spec import LoopSpec
from adaptscope.train.experiment import load_experiment, run_specs
from adaptscope.train.step import GANStep

ALL = "experiments/all-methods.toml"


def specs(*overrides: str) -> dict[str, object]:
    return {s.method: s for s in run_specs(load_experiment(ALL, list(overrides))) if s.seed == 0}


def test_each_method_runs_with_its_codes_optimiser_and_batch():
    runs = specs()
    assert runs["bsa"].train.betas == (0.9, 0.999) and runs["bsa"].train.lr == 0.03
    assert runs["rick"].train.batch == 2
    for name in ("tgan", "freezed", "cdc", "dcl", "adam", "minegan"):
        assert runs[name].train.betas == (0.0, 0.99), name
        assert runs[name].train.batch == 4, name
    assert runs["adam"].schedule.iterations == 1250  # 1,000 of adaptation after 250 of probing
    assert runs["adam"].schedule.eval_every == 50  # its own table: on the others' grid from 250
    assert runs["tgan"].schedule.iterations == 1000


def test_a_thrown_away_first_stage_comes_on_top_of_the_adaptation_iterations():
    """AdAM's probing restarts from the source: whatever the experiment's iterations, AdAM gets
    as many of adaptation after its probing."""
    runs = specs("schedule.iterations=500", "adam.probe_iterations=100")
    assert runs["adam"].schedule.iterations == 600 and runs["tgan"].schedule.iterations == 500
    runs = specs("adam.schedule.iterations=300")  # the method's own table counts adaptation too
    assert runs["adam"].schedule.iterations == 550


def test_an_experiment_sets_a_methods_own_loop_and_schedule():
    runs = specs("rick.train.batch=4", "tgan.schedule.iterations=500",
                 "bsa.train.betas=[0.5, 0.9]")
    assert runs["rick"].train.batch == 4  # over the method's own setting
    assert runs["bsa"].train.betas == (0.5, 0.9) and runs["bsa"].train.lr == 0.03
    assert runs["tgan"].schedule.iterations == 500
    assert runs["freezed"].schedule.iterations == 1000 and runs["freezed"].train.batch == 4


@pytest.mark.parametrize("override,named", [
    ("rick.train.bach=3", "rick.train.batch"),
    ("rick.train.batch=0", "train.batch"),
    ("adam.schedule.iterations=-1", "[adam.schedule]"),
    ("bsa.train.betas=[1.5, 0.9]", "[bsa.train]"),
])
def test_a_bad_method_setting_names_the_table(override, named):
    with pytest.raises(ConfigError) as err:
        load_experiment(ALL, [override])
    assert named in str(err.value)


def _step(loop: LoopSpec) -> GANStep:
    torch.manual_seed(0)
    g, d = Generator(16, 16, 1, channels={4: 8, 8: 8, 16: 8}), Discriminator(
        16, channels={4: 8, 8: 8, 16: 8})
    return GANStep(g, d, copy.deepcopy(g), Method(None, MethodContext(g=g, d=d)), loop)


def test_the_optimisers_take_the_betas_raised_for_lazy_regularisation():
    step = _step(LoopSpec(betas=(0.9, 0.999), path_regularize=0.0, r1_every=16))
    assert step.g_opt.param_groups[0]["betas"] == (0.9, 0.999)  # no lazy term on G
    c = 16 / 17  # lazy R1 every 16: the reference's every / (every + 1)
    assert step.d_opt.param_groups[0]["betas"] == pytest.approx((0.9 ** c, 0.999 ** c))
    default = _step(LoopSpec(path_regularize=2.0, path_every=4))
    assert default.g_opt.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** 0.8))
