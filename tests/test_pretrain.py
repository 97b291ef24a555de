"""`adaptscope pretrain source` end to end on a tiny model: train, resume, export."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from adaptscope.cli import app
from adaptscope.models import load_checkpoint

TINY = ["--set", "model.size=16", "--set", "model.width=8", "--set", "model.style_dim=16",
        "--set", "batch=4", "--set", "checkpoint_every=2", "--set", "sample_every=2",
        "--set", "r1_every=2"]


def test_pretrain_source_trains_resumes_and_exports(tmp_path):
    runner = CliRunner()
    out = tmp_path / "train"
    result = runner.invoke(app, ["pretrain", "source", "--out", str(out), "--steps", "4", *TINY])
    assert result.exit_code == 0, result.output
    first = load_checkpoint(out / "checkpoint.pt")
    assert first.extra["step"] == 4 and first.g_ema.size == 16
    assert (out / "samples_000004.png").exists()

    export = tmp_path / "source.pt"
    result = runner.invoke(app, ["pretrain", "source", "--out", str(out), "--steps", "6",
                                 "--export", str(export), *TINY])
    assert result.exit_code == 0, result.output
    assert "resumed" in result.output and "at step 4" in result.output
    shipped = load_checkpoint(export)
    assert shipped.extra["step"] == 6 and shipped.d is not None and shipped.g is not None
    assert "g_optim" not in shipped.extra  # the shipped file carries no optimiser state
    assert json.loads(shipped.extra["meta"])["recipe"]["model"]["width"] == 8
    changed = any(not torch.equal(a, b) for a, b in zip(
        first.g.state_dict().values(), shipped.g.state_dict().values(), strict=True))
    assert changed


def test_training_log_records_the_latest_r1_penalty(tmp_path):
    out = tmp_path / "train"
    result = CliRunner().invoke(app, ["pretrain", "source", "--out", str(out), "--steps", "50",
                                      *TINY, "--set", "r1_every=16"])
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert record["step"] == 50
    assert record["r1"] is not None and record["r1"] > 0  # from step 48, not a placeholder 0


DIFFUSION_TINY = ["--config", "no-recipe.toml", "--set", "model.size=16",
                  "--set", "model.channels=[8, 16]", "--set", "model.attention_levels=[1]",
                  "--set", "model.norm_groups=4", "--set", "batch=4",
                  "--set", "checkpoint_every=2", "--set", "sample_every=2",
                  "--set", "sample_steps=2"]


def test_pretrain_diffusion_resumes_bit_for_bit_and_exports_its_average(tmp_path,
                                                                       monkeypatch):
    """Two steps, stop, two more, against four at once: the same weights, average and
    optimiser state; the exported file holds the moving average and no optimiser."""
    from adaptscope.models.diffusion import load_diffusion

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for out, steps in (("whole", [4]), ("resumed", [2, 4])):
        for n in steps:
            result = runner.invoke(app, ["pretrain", "diffusion", "--out", out, "--steps",
                                         str(n), *DIFFUSION_TINY])
            assert result.exit_code == 0, result.output
    assert "resumed" in result.output and "at step 2" in result.output
    whole, resumed = (load_diffusion(tmp_path / o / "checkpoint.pt") for o in ("whole",
                                                                               "resumed"))
    for key in ("ema", "step"):
        a, b = whole.extra[key], resumed.extra[key]
        assert a == b if key == "step" else all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(),
                                                  resumed.model.state_dict().values(),
                                                  strict=True))
    result = runner.invoke(app, ["pretrain", "diffusion", "--out", "whole", "--steps", "4",
                                 "--export", "shipped.pt", *DIFFUSION_TINY])
    assert result.exit_code == 0, result.output
    shipped = load_diffusion(tmp_path / "shipped.pt")
    assert "optimizer" not in shipped.extra and shipped.extra["step"] == 4
    assert all(torch.equal(shipped.model.unet.state_dict()[k], v)
               for k, v in whole.extra["ema"].items())
