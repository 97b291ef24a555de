"""`load_diffusion_source`: each kind of diffusion source lands as a `DiffusionModel` that
predicts what its network predicts, and each unusable one is refused with one clear error."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, UNet2DModel

from adaptscope.errors import CheckpointError, ConfigError
from adaptscope.models import Generator, save_checkpoint
from adaptscope.models.adm import ADMConfig, ADMUNet
from adaptscope.models.diffusers_folder import load_diffusers_folder
from adaptscope.models.diffusion import DEFAULT_SCHEDULE, DiffusionModel, save_diffusion
from adaptscope.models.diffusion_checkpoint import adm_linear_schedule, load_diffusion_source

# A 64 px ADM: 64 px has a default channel_mult, so every setting is inferred or FFHQ256's.
TINY_ADM = ADMConfig(image_size=64, num_channels=32, num_res_blocks=1, attention_resolutions=(8,),
                     num_head_channels=64, learn_sigma=True, dropout=0.1, resblock_updown=True)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def tiny_unet(seed: int = 0, **config) -> UNet2DModel:
    torch.manual_seed(seed)
    settings = dict(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                    block_out_channels=(16, 32), norm_num_groups=8,
                    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                    up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    return UNet2DModel(**{**settings, **config}).eval()


def tiny_adm(seed: int = 0) -> ADMUNet:
    """TINY_ADM with every parameter non-zero (a fresh one predicts zeros everywhere)."""
    torch.manual_seed(seed)
    net = ADMUNet(TINY_ADM).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def probe(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.randn(2, 3, size, size, generator=gen), torch.tensor([7, 912])


@pytest.fixture(scope="module")
def adm_file(tmp_path_factory) -> tuple[Path, ADMUNet]:
    net = tiny_adm()
    path = tmp_path_factory.mktemp("adm") / "adm.pt"
    torch.save(net.state_dict(), path)
    return path, net


def save_pipeline(folder: Path, unet: UNet2DModel, **scheduler) -> Path:
    DDPMPipeline(unet=unet, scheduler=DDIMScheduler(**scheduler)).save_pretrained(folder)
    return folder


# --- each source kind ------------------------------------------------------------------------


def test_a_diffusers_pipeline_folder(tmp_path):
    unet = tiny_unet()
    folder = save_pipeline(tmp_path / "pipe", unet, beta_schedule="scaled_linear",
                           beta_start=0.00085, beta_end=0.012)
    loaded = load_diffusion_source(folder)
    assert loaded.kind == "diffusers" and loaded.path == folder
    assert isinstance(loaded.model, DiffusionModel) and loaded.model.size == 16
    assert loaded.model.schedule["beta_schedule"] == "scaled_linear"
    assert loaded.model.schedule["beta_end"] == 0.012
    assert not loaded.model.training and not loaded.model.unet.training
    x, t = probe(16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x, t), unet(x, t).sample, rtol=0, atol=0)


def test_a_bare_unet_folder_takes_the_schedule_beside_it_else_the_default(tmp_path):
    unet = tiny_unet()
    unet.save_pretrained(tmp_path / "unet")
    assert load_diffusion_source(tmp_path / "unet").model.schedule == DEFAULT_SCHEDULE
    DDIMScheduler(beta_end=0.015).save_pretrained(tmp_path / "unet")  # scheduler_config.json
    loaded = load_diffusion_source(tmp_path / "unet")
    assert loaded.model.schedule["beta_end"] == 0.015
    x, t = probe(16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x, t), unet(x, t).sample, rtol=0, atol=0)


def test_a_pipelines_unet_folder_takes_the_pipelines_schedule(tmp_path):
    save_pipeline(tmp_path / "pipe", tiny_unet(), beta_end=0.013)
    loaded = load_diffusers_folder(tmp_path / "pipe" / "unet")
    assert loaded.model.schedule["beta_end"] == 0.013


def test_an_adaptscope_file(tmp_path):
    unet = tiny_unet(seed=1)
    save_diffusion(tmp_path / "own.pt", DiffusionModel(unet, {"beta_end": 0.01}), note="kept")
    loaded = load_diffusion_source(tmp_path / "own.pt")
    assert loaded.kind == "adaptscope" and loaded.extra == {"note": "kept"}
    assert loaded.model.schedule["beta_end"] == 0.01 and not loaded.model.training
    x, t = probe(16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x, t), unet(x, t).sample, rtol=0, atol=0)


def test_an_adm_state_dict(adm_file):
    path, net = adm_file
    loaded = load_diffusion_source(path)
    assert loaded.kind == "adm" and loaded.model.kind == "adm" and loaded.model.size == 64
    assert loaded.extra["adm_config"] == asdict(TINY_ADM)
    assert loaded.model.schedule == {**DEFAULT_SCHEDULE, **adm_linear_schedule(1000)}
    assert not loaded.model.training
    params = list(loaded.model.parameters())
    assert all(p.requires_grad and p.dtype == torch.float32 and p.device.type == "cpu"
               for p in params)
    x, t = probe(64)
    with torch.no_grad():
        eps = loaded.model(x, t)
        full = net(x, t)
    assert full.shape[1] == 6 and eps.shape == x.shape  # the learned variance is dropped
    torch.testing.assert_close(eps, full[:, :3], rtol=0, atol=0)


def test_an_adm_state_dict_with_a_module_prefix_in_fp16(adm_file, tmp_path):
    path, net = adm_file
    state = {f"module.{k}": v.half() for k, v in net.state_dict().items()}
    torch.save(state, tmp_path / "ddp_fp16.pt")
    loaded = load_diffusion_source(tmp_path / "ddp_fp16.pt", adm_preset=None)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    x, t = probe(64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x, t), net(x, t)[:, :3], rtol=0.05, atol=0.05)


def test_the_adm_schedule_is_guided_diffusions_linear_one():
    # gaussian_diffusion.py:27-35: linspace(1e-4 s, 0.02 s, steps), s = 1000 / steps
    assert adm_linear_schedule(1000) == {**DEFAULT_SCHEDULE}
    assert adm_linear_schedule(250)["beta_end"] == pytest.approx(0.08)
    model = DiffusionModel(ADMUNet(TINY_ADM), adm_linear_schedule(1000), size=64, kind="adm")
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    np.testing.assert_allclose(model.alphas_cumprod.numpy(), np.cumprod(1 - betas), rtol=1e-6)


# --- ADM strictness --------------------------------------------------------------------------


def test_an_adm_file_missing_a_tensor_is_refused_naming_it(adm_file, tmp_path):
    path, net = adm_file
    state = {k: v for k, v in net.state_dict().items() if k != "middle_block.1.proj_out.bias"}
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing 1 tensors.*middle_block\.1\.proj_out"):
        load_diffusion_source(tmp_path / "missing.pt")


def test_an_adm_file_with_an_extra_tensor_is_refused_naming_it(adm_file, tmp_path):
    path, net = adm_file
    state = {**net.state_dict(), "input_blocks.1.0.extra.weight": torch.zeros(3)}
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"unexpected 1 tensors.*input_blocks\.1\.0\.extra"):
        load_diffusion_source(tmp_path / "extra.pt")


def test_an_adm_file_that_is_not_the_named_preset_is_refused(adm_file):
    path, _ = adm_file
    with pytest.raises(CheckpointError, match=r"preset 'ffhq256'.*(missing|wrong shapes)"):
        load_diffusion_source(path, adm_preset="ffhq256")
    with pytest.raises(ConfigError, match="unknown ADM preset 'lsun'"):
        load_diffusion_source(path, adm_preset="lsun")


def test_a_class_conditional_adm_is_refused(adm_file, tmp_path):
    _, net = adm_file
    torch.save({**net.state_dict(), "label_emb.weight": torch.zeros(10, 128)}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="class-conditional"):
        load_diffusion_source(tmp_path / "c.pt")


# --- what is not a usable diffusion source ---------------------------------------------------


def test_a_missing_path_or_empty_folder(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing\.pt does not exist; give a diffusers"):
        load_diffusion_source(tmp_path / "nothing.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither model_index.json .* nor config.json"):
        load_diffusion_source(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_diffusers_folder(tmp_path / "nowhere")


def test_a_pipeline_without_its_scheduler_or_unet_parts(tmp_path):
    folder = save_pipeline(tmp_path / "pipe", tiny_unet())
    shutil.rmtree(folder / "scheduler")
    with pytest.raises(CheckpointError, match="scheduler/scheduler_config.json"):
        load_diffusion_source(folder)
    save_pipeline(folder, tiny_unet())
    (folder / "unet" / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"unet/config\.json: does not exist"):
        load_diffusion_source(folder)


def test_a_unet_folder_without_weights(tmp_path):
    tiny_unet().save_pretrained(tmp_path / "unet")
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights file .*found \\['config.json'\\]"):
        load_diffusion_source(tmp_path / "unet")


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    tiny_unet().save_pretrained(tmp_path / "unet")
    config_file = tmp_path / "unet" / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "layers_per_block": 2}))
    with pytest.raises(CheckpointError, match=r"do not match config.json \(.*expected shape"):
        load_diffusion_source(tmp_path / "unet")


@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_a_missing_or_unexpected_tensor_is_refused_naming_it(tmp_path, change):
    from safetensors.torch import load_file, save_file

    tiny_unet().save_pretrained(tmp_path / "unet")
    weights_file = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights_file)
    if change == "missing":
        del state["conv_out.bias"]
        named = r"missing 1 tensors, e.g. \['conv_out.bias'\]"
    else:
        state["conv_out.extra"] = torch.zeros(2)
        named = r"unexpected 1 tensors, e.g. \['conv_out.extra'\]"
    save_file(state, weights_file)
    with pytest.raises(CheckpointError, match=named):
        load_diffusion_source(tmp_path / "unet")


def test_a_conditional_unet_is_refused_as_such(tmp_path):
    (tmp_path / "sd_unet").mkdir()
    (tmp_path / "sd_unet" / "config.json").write_text(json.dumps(
        {"_class_name": "UNet2DConditionModel", "sample_size": 64, "in_channels": 4}))
    with pytest.raises(CheckpointError, match="UNet2DConditionModel.*only unconditional "
                                              "UNet2DModel"):
        load_diffusion_source(tmp_path / "sd_unet")
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
         "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "PNDMScheduler"]}))
    with pytest.raises(CheckpointError, match="UNet2DConditionModel"):
        load_diffusion_source(tmp_path / "sd")


def test_a_latent_pipeline_is_refused(tmp_path):
    folder = save_pipeline(tmp_path / "ldm", tiny_unet())
    index = json.loads((folder / "model_index.json").read_text())
    index["vqvae"] = ["diffusers", "VQModel"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="also has vqvae"):
        load_diffusion_source(folder)


def test_a_class_conditional_unet2dmodel_is_refused(tmp_path):
    tiny_unet(num_class_embeds=4).save_pretrained(tmp_path / "unet")
    with pytest.raises(CheckpointError, match="class-conditional"):
        load_diffusion_source(tmp_path / "unet")


@pytest.mark.parametrize("scheduler, match", [
    (dict(prediction_type="v_prediction"), "prediction_type is 'v_prediction'.*epsilon"),
    (dict(beta_schedule="squaredcos_cap_v2"), "scheduler_config.json: beta_schedule"),
])
def test_an_unsupported_schedule_is_refused_naming_the_file(tmp_path, scheduler, match):
    folder = save_pipeline(tmp_path / "pipe", tiny_unet(), **scheduler)
    with pytest.raises(CheckpointError, match=match):
        load_diffusion_source(folder)


def test_an_adm_preset_for_another_kind_of_source_is_refused(tmp_path):
    tiny_unet().save_pretrained(tmp_path / "unet")
    with pytest.raises(CheckpointError, match="diffusers folder: an ADM preset"):
        load_diffusion_source(tmp_path / "unet", adm_preset="ffhq256")


def test_files_that_are_no_diffusion_model(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "gan.pt", g_ema=Generator(16, 32, 2, channels={4: 16, 8: 16,
                                                                               16: 8}))
    with pytest.raises(CheckpointError, match="StyleGAN2 checkpoint, not a diffusion model"):
        load_diffusion_source(tmp_path / "gan.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"no diffusion model .*found \['weights'\]"):
        load_diffusion_source(tmp_path / "other.pt")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt is not a diffusion checkpoint"):
        load_diffusion_source(tmp_path / "notes.pt")
