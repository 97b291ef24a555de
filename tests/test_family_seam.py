"""The generator-family seam: a diffusion method runs on the same loop, tracker and store as the
GAN methods. Its rows say `family = "diffusion"`, its samples come from fixed initial noise and
the deterministic sampler (so sample k is the same image for the same weights whatever the
batching), it resumes bit for bit, a source of the other family is refused in one line, and
tables written before schema 7 read as GANs'."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from _tiny_diffusion import make_diffusion_source, tiny_diffusion
from _tiny_world import run_crashing_at, tiny_spec

from adaptscope import load_trajectories
from adaptscope.errors import ConfigError
from adaptscope.models.diffusion import FixedNoise
from adaptscope.spec import LoopSpec, MetricsSpec, ScheduleSpec, SourceSpec
from adaptscope.train.diffusion_training import SampledDiffusion
from adaptscope.train.loop import run_adaptation
from adaptscope.train.preflight import check_runs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def diffusion_source(tmp_path_factory):
    return make_diffusion_source(tmp_path_factory.mktemp("diffusion") / "tiny.pt")


def diffusion_spec(source, method="ddpm_ft", iterations=4, **changes):
    spec = tiny_spec(source, method, schedule=ScheduleSpec(iterations=iterations, eval_every=2,
                                                           cheap_every=1),
                     train=LoopSpec(batch=2, lr=1e-3, betas=(0.9, 0.999)),
                     metrics=MetricsSpec(fid_backbone="toy", fid_n_gen=12, lpips_backbone="toy",
                                         lpips_n_samples=12, realism="toy", ground_truth=True,
                                         n_grid=4, batch_size=5, cheap_n_samples=4,
                                         sampler_steps=3))
    return replace(spec, **changes)


def test_a_diffusion_run_records_diffusion_rows(diffusion_source, tmp_path):
    run_adaptation(diffusion_spec(diffusion_source), tmp_path / "run")
    df = load_trajectories(tmp_path / "run")
    assert set(df["family"]) == {"diffusion"}
    full = df[df["evaluation"] == "full"]
    assert list(full["iteration"]) == [0, 2, 4]
    assert list(df[df["evaluation"] == "cheap"]["iteration"]) == [1, 3]
    for column in ("fid", "intra_lpips", "realism_pt", "nearest_shot_lpips", "gt_coverage"):
        assert np.isfinite(full[column]).all(), column
    assert full["loss_diffusion"].iloc[1:].gt(0).all()
    # the weights move, so the samples of the same fixed noise change
    grids = [np.load(tmp_path / "run" / "samples" / f"iter_{i:06d}.npy") for i in (0, 4)]
    assert not np.array_equal(*grids)


def test_a_gan_run_records_gan_rows(source_checkpoint, tmp_path):
    spec = tiny_spec(source_checkpoint, schedule=ScheduleSpec(iterations=2, eval_every=2))
    run_adaptation(spec, tmp_path / "run")
    assert set(load_trajectories(tmp_path / "run")["family"]) == {"gan"}


def test_sample_k_does_not_depend_on_the_batching():
    """The evaluator's fixed inputs: the k-th initial noise and its DDIM image are the same in
    batches of 2 and of 5 (as a GAN's fixed latents are)."""
    model = tiny_diffusion()
    from adaptscope.methods.ddpm_ft import DDPMFineTune
    from adaptscope.methods.diffusion_base import DiffusionContext

    sampled = SampledDiffusion(DDPMFineTune(DDPMFineTune.Params(), DiffusionContext(model)),
                               model, steps=3)
    a = torch.cat([sampled.generate(x) for x in sampled.fixed_batches(7, 6, 2)])
    b = torch.cat([sampled.generate(x) for x in sampled.fixed_batches(7, 6, 5)])
    assert torch.allclose(a, b, atol=1e-5)
    noise = torch.cat(list(FixedNoise(16, 7).batches(6, 4)))
    expected = model.sampler(3)(noise)
    assert torch.allclose(a, expected, atol=1e-5)


@pytest.mark.parametrize("noise", ["model", "clipped"])
def test_sampling_is_deterministic_ddim(noise):
    """DDIM with eta 0, computed here from its equation on the model's schedule: x0_hat from the
    predicted noise, clipped to [-1, 1]; x_{t-1} = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev)
    eps, eps the model's prediction ("model") or re-derived from the clipped x0_hat
    ("clipped", guided-diffusion's ddim_sample)."""
    model = tiny_diffusion().eval()
    x = FixedNoise(16, 3).draw(2)
    steps = 4
    abar = model.alphas_cumprod.double()
    stride = model.num_train_timesteps // steps
    times = list(range(0, model.num_train_timesteps, stride))[::-1]  # leading spacing
    y = x.double()
    with torch.no_grad():
        for t in times:
            eps = model(y.float(), torch.full((2,), t)).double()
            a_t = abar[t]
            a_prev = abar[t - stride] if t - stride >= 0 else abar[0]  # set_alpha_to_one False
            x0 = ((y - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
            if noise == "clipped":
                eps = (y - a_t.sqrt() * x0) / (1 - a_t).sqrt()
            y = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    sampled = model.sampler(steps, noise=noise)(x)
    assert torch.allclose(sampled, y.float().clamp(-1, 1), atol=1e-4)
    other = model.sampler(steps, noise="clipped" if noise == "model" else "model")(x)
    assert not torch.allclose(sampled, other, atol=1e-3)  # the two forms differ here


def test_a_diffusion_run_resumes_bit_for_bit(diffusion_source, tmp_path):
    spec = diffusion_spec(diffusion_source)
    run_adaptation(spec, tmp_path / "full")
    run_crashing_at(spec, tmp_path / "crashed", 3)  # checkpoint at 2, crash after step 3
    run_adaptation(spec, tmp_path / "crashed")
    full, resumed = (load_trajectories(tmp_path / name) for name in ("full", "crashed"))
    drop = ["wall_time_s"]
    pd_full = full.drop(columns=drop).reset_index(drop=True)
    pd_resumed = resumed.drop(columns=drop).reset_index(drop=True)
    assert pd_full.equals(pd_resumed)
    for i in (2, 4):
        np.testing.assert_array_equal(
            np.load(tmp_path / "full" / "samples" / f"iter_{i:06d}.npy"),
            np.load(tmp_path / "crashed" / "samples" / f"iter_{i:06d}.npy"))


@pytest.mark.parametrize("method,source", [("ddpm_ft", "toy"), ("tgan", "toy-diffusion")])
def test_a_method_of_one_family_refuses_a_shipped_source_of_the_other(method, source):
    from adaptscope.spec import ExperimentConfig
    from adaptscope.train.experiment import run_specs

    cfg = ExperimentConfig(methods=[method], source=SourceSpec(checkpoint=source))
    with pytest.raises(ConfigError) as err:
        run_specs(cfg)
    message = str(err.value)
    assert "\n" not in message and method in message and source in message


def test_a_diffusion_method_refuses_a_gan_file_and_back(diffusion_source, source_checkpoint):
    with pytest.raises(ConfigError, match="adapts a diffusion model.*is a GAN"):
        check_runs([diffusion_spec(source_checkpoint)])
    with pytest.raises(ConfigError, match="adapts a GAN.*is a diffusion model"):
        check_runs([tiny_spec(diffusion_source)])


def test_tables_before_schema_7_read_as_gans(source_checkpoint, tmp_path):
    spec = tiny_spec(source_checkpoint, schedule=ScheduleSpec(iterations=2, eval_every=2))
    run_adaptation(spec, tmp_path / "run")
    path = tmp_path / "run" / "trajectory.parquet"
    table = pq.read_table(path)
    meta = {**table.schema.metadata, b"adaptscope.schema": b"6"}
    old = table.drop(["family"]).replace_schema_metadata(meta)
    pq.write_table(old, path)
    assert pq.read_table(path).schema.names.count("family") == 0
    df = load_trajectories(tmp_path / "run")
    assert list(df["family"]) == ["gan"] * len(df)


def test_methods_are_listed_by_family():
    from typer.testing import CliRunner

    from adaptscope.cli import app

    out = CliRunner().invoke(app, ["methods"]).output
    gan, diffusion = out.index("GAN methods"), out.index("Diffusion methods")
    assert gan < out.index("\ntgan ") < diffusion
    for name in ("ddpm_ft", "lora", "dreambooth", "domainstudio"):
        assert out.index(f"\n{name} ") > diffusion


def test_the_plain_run_of_a_diffusion_method_names_the_source_to_use(tmp_path):
    """`adaptscope run --methods ddpm_ft` with the embedded default's GAN source: one line."""
    from typer.testing import CliRunner

    from adaptscope.cli import app

    result = CliRunner().invoke(app, ["run", "--methods", "ddpm_ft", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "'toy-diffusion'" in result.output and "adapts a diffusion model" in result.output
    assert not list(tmp_path.iterdir())


def test_bfloat16_sampling_stays_close_to_float32():
    """The embedded protocol samples with the denoiser in bfloat16 (2.4x faster on a CPU): the
    images stay within a few 8-bit levels of float32 sampling."""
    model = tiny_diffusion().eval()
    x = FixedNoise(16, 1).draw(4)
    a, b = model.sampler(4)(x), model.sampler(4, "bfloat16")(x)
    assert not torch.equal(a, b)  # the setting does something
    assert (a - b).abs().mean() < 0.05


def test_the_shipped_toy_diffusion_model_loads_strictly_within_5_mb():
    from adaptscope.embedded import asset
    from adaptscope.models.diffusion_checkpoint import load_diffusion_source

    path = asset("toy_diffusion.pt")
    assert path.stat().st_size <= 5 * 1024 * 1024
    loaded = load_diffusion_source(path)
    assert loaded.model.size == 32 and loaded.extra["step"] > 0
    assert "optimizer" not in loaded.extra  # the moving average only
