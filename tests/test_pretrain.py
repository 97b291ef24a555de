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
