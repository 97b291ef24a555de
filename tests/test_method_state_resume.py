"""A resumed run restores a method's state instead of computing it: set-up is not re-run, the
moving averages of the extra modules and AdAM's stage come back bit for bit, and each row's
`stage` column names the stage of the step taken at its iteration.

The loop runs with a recording tracker (`_fast_loop`), so each case takes seconds; the full,
evaluated versions are the slow tests of `test_loop.py`.
"""

from __future__ import annotations

import pytest
from _fast_loop import install, same
from _tiny_world import run_crashing_at, tiny_spec

from adaptscope.methods import get_method
from adaptscope.spec import ScheduleSpec
from adaptscope.train.loop import run_adaptation

pytestmark = pytest.mark.usefixtures("one_thread")


def schedule(iterations: int) -> ScheduleSpec:
    return ScheduleSpec(iterations=iterations, eval_every=2)


@pytest.mark.parametrize("method", ["ewc", "cdc", "dcl", "rick", "bsa"])
def test_setup_runs_on_a_fresh_run_only(method, source_checkpoint, tmp_path, monkeypatch):
    """Set-up draws from the run's RNG and computes the state the checkpoint carries (EWC's
    Fisher, CDC's anchors, RICK's latents): run again on resume it would replace that state."""
    install(monkeypatch)
    cls = get_method(method)
    calls = []
    setup = cls.setup
    monkeypatch.setattr(cls, "setup", lambda self: (calls.append(1), setup(self))[1])
    spec = tiny_spec(source_checkpoint, method, schedule=schedule(2))
    run_crashing_at(spec, tmp_path / "run", 0)  # the checkpoint at 0, then one step
    assert calls == [1]
    run_adaptation(spec, tmp_path / "run")
    assert calls == [1]


@pytest.mark.parametrize("method,params", [
    ("minegan", {"miner_iterations": 3, "input_miner": True}),  # resumed in the mine stage,
    ("minegan", {"miner_iterations": 3}),  # crosses to joint; the code's form and the paper's
    ("adam", {"probe_iterations": 2, "n_fisher": 4}),  # resumed after the switch
    ("adam", {"probe_iterations": 3, "n_fisher": 4}),  # resumed before it: the Fisher reads
])                                                     # the modulations' restored average
def test_resumed_state_equals_the_uninterrupted_state(method, params, source_checkpoint,
                                                      tmp_path, monkeypatch):
    """At every row from the checkpoint on: g_ema, the method's modules and their moving
    averages, AdAM's switch and masks, and the sampled images, equal bit for bit."""
    trackers = install(monkeypatch)
    spec = tiny_spec(source_checkpoint, method, method_params=params, schedule=schedule(4))
    run_adaptation(spec, tmp_path / "full")
    run_crashing_at(spec, tmp_path / "crashed", 3)  # checkpoint at 2, crash after step 3
    run_adaptation(spec, tmp_path / "crashed")
    full, crashed, resumed = (t.rows for t in trackers)
    assert [r["iteration"] for r in full] == [0, 2, 4]
    assert [r["iteration"] for r in resumed] == [2, 4]
    assert same(crashed[1], full[1])  # the state that was checkpointed
    start = resumed[0]["method"]
    assert not same(start["g_module0_ema"], start["g_module0"])  # an average, not the module
    for row in resumed:
        expected = full[[r["iteration"] for r in full].index(row["iteration"])]
        for key in ("g_ema", "method", "images", "stage"):
            assert same(row[key], expected[key]), (row["iteration"], key)
    if method == "adam":
        assert start["switched"] is (params["probe_iterations"] == 2)
        assert resumed[-1]["method"]["switched"] is True


@pytest.mark.parametrize("method,params,stages", [
    ("adam", {"probe_iterations": 2, "n_fisher": 4}, ["probe", "adapt", "adapt"]),
    ("minegan", {"miner_iterations": 2}, ["mine", "joint", "joint"]),
    ("rick", {"warmup_iter": 2, "fisher_every": 2, "n_fisher": 2},
     ["warmup", "adapt", "adapt"]),
])
def test_the_row_at_the_switch_names_the_stage_that_starts_there(method, params, stages,
                                                                 source_checkpoint, tmp_path,
                                                                 monkeypatch):
    """A row at iteration i carries the stage of the step taken at i: the switch iteration's
    row is the new stage's first, its weights those the old stage left."""
    trackers = install(monkeypatch)
    spec = tiny_spec(source_checkpoint, method, method_params=params, schedule=schedule(4))
    run_adaptation(spec, tmp_path / "run")
    assert [(r["iteration"], r["stage"]) for r in trackers[0].rows] == list(
        zip([0, 2, 4], stages, strict=True))
    assert [r["stage_start"] for r in trackers[0].rows] == [0, 2, 2]  # where each stage began
