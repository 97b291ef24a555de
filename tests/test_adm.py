"""The ADM port against guided-diffusion itself: numbers on seeded weights, the FFHQ-256 layout.

The fixtures were written by tests/fixtures/make_adm_reference.py from guided-diffusion's own
`UNetModel` (commit 22e0df8); these tests read only the fixtures.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptscope.errors import CheckpointError, ConfigError
from adaptscope.models.adm import FFHQ256, ADMConfig, ADMUNet, adm_preset, timestep_embedding
from adaptscope.models.diffusion_checkpoint import infer_adm_config

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = np.load(FIXTURES / "adm_reference.npz")
MANIFEST = json.loads(str(REFERENCE["manifest"]))
FFHQ_JSON = json.loads((FIXTURES / "adm_ffhq256_state_dict.json").read_text())


def config_from_flags(flags: dict) -> ADMConfig:
    """guided-diffusion's flag values (comma lists as strings, "" for the default
    channel_mult) as an ADMConfig; flags that are not the network's are ignored."""
    def ints(text: str) -> tuple[int, ...] | None:
        return tuple(int(v) for v in text.split(",")) if text else None

    return ADMConfig(
        image_size=flags["image_size"], num_channels=flags["num_channels"],
        num_res_blocks=flags["num_res_blocks"], channel_mult=ints(flags["channel_mult"]),
        attention_resolutions=ints(flags["attention_resolutions"]),
        num_heads=flags["num_heads"], num_head_channels=flags["num_head_channels"],
        num_heads_upsample=flags["num_heads_upsample"], learn_sigma=flags["learn_sigma"],
        dropout=flags["dropout"], use_scale_shift_norm=flags["use_scale_shift_norm"],
        resblock_updown=flags["resblock_updown"],
        use_new_attention_order=flags["use_new_attention_order"])


def seeded_weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The fixture script's `seeded_weights`, computed again: N(0, 1) from
    RandomState(crc32(name)), over sqrt(fan-in) for matrices and kernels, 1 + 0.1 N for
    normalisation scales, 0.1 N for biases."""
    out = {}
    for name, value in net.state_dict().items():
        shape = tuple(value.shape)
        z = np.random.RandomState(zlib.crc32(name.encode())).standard_normal(shape)
        if len(shape) >= 2:
            z = z / np.sqrt(np.prod(shape[1:]))
        elif name.endswith("weight"):
            z = 1.0 + 0.1 * z
        else:
            z = 0.1 * z
        out[name] = torch.from_numpy(z.astype(np.float32))
    return out


def reference_net(case: str) -> ADMUNet:
    net = ADMUNet(config_from_flags(MANIFEST["cases"][case])).eval()
    assert list(net.state_dict()) == MANIFEST["names"][case]
    weights = seeded_weights(net)
    sums = np.array([[w.double().sum().item(), w.double().square().sum().item()]
                     for w in weights.values()])
    np.testing.assert_allclose(sums, REFERENCE[f"{case}_checksums"], rtol=1e-9, atol=1e-9,
                               err_msg="the seeded weights differ from the fixture's")
    net.load_state_dict(weights, strict=True)
    return net


@pytest.mark.parametrize("case", ["main", "plain"])
def test_output_equals_guided_diffusion_on_seeded_weights(case, one_thread):
    # "main" takes the FFHQ model's paths (resblock_updown, scale-shift norm, learned sigma,
    # legacy multi-head attention at two resolutions, dropout in eval mode); "plain" the rest
    # (convolutional resampling, additive embedding, num_heads, the new attention order).
    net = reference_net(case)
    x, t = torch.from_numpy(REFERENCE[f"{case}_x"]), torch.from_numpy(REFERENCE[f"{case}_t"])
    with torch.no_grad():
        out = net(x, t)
    np.testing.assert_allclose(out.numpy(), REFERENCE[f"{case}_out"], rtol=1e-5, atol=1e-5)


def test_ffhq256_preset_has_guided_diffusions_state_dict_and_flags():
    with torch.device("meta"):
        net = ADMUNet(adm_preset("ffhq256"))
    got = [[k, list(v.shape)] for k, v in net.state_dict().items()]
    assert got == FFHQ_JSON["state_dict"]
    assert sum(p.numel() for p in net.parameters()) == FFHQ_JSON["parameters"] == 552_814_086
    assert list(net.buffers()) == []
    assert config_from_flags(FFHQ_JSON["flags"]) == FFHQ256
    assert FFHQ_JSON["flags"]["rescale_timesteps"] is False  # the model sees t in 0..999


def test_config_is_inferred_from_the_ffhq256_shapes():
    state = {k: torch.empty(shape, device="meta") for k, shape in FFHQ_JSON["state_dict"]}
    assert infer_adm_config(state) == FFHQ256


@pytest.mark.parametrize("case", ["main", "plain"])
def test_shape_settings_are_inferred_and_the_rest_taken_from_the_base(case):
    # At 64 px, whose default channel_mult tells the image size; heads, attention order and
    # dropout cannot be seen in the tensors, so they come from `base`.
    config = replace(config_from_flags(MANIFEST["cases"][case]), image_size=64,
                     channel_mult=None)
    with torch.device("meta"):
        state = ADMUNet(config).state_dict()
    assert infer_adm_config(state, base=config) == config
    with pytest.raises(CheckpointError, match="attention settings do not fit"):
        infer_adm_config(state)  # 96 channels at 16 px: no heads of FFHQ256's 64 channels
    assert infer_adm_config(state, base=replace(FFHQ256, num_head_channels=32)
                            ).num_head_channels == 32


def test_an_image_size_the_weights_cannot_tell_is_refused():
    with torch.device("meta"):
        state = ADMUNet(config_from_flags(MANIFEST["cases"]["main"])).state_dict()
    with pytest.raises(CheckpointError, match=r"channel_mult \(1, 2, 2\).*image size cannot"):
        infer_adm_config(state)


def test_strict_loading_names_a_missing_and_an_extra_key():
    net = reference_net("main")
    state = net.state_dict()
    missing = {k: v for k, v in state.items() if k != "middle_block.1.proj_out.bias"}
    with pytest.raises(RuntimeError, match=r"middle_block\.1\.proj_out\.bias"):
        ADMUNet(net.config).load_state_dict(missing, strict=True)
    extra = {**state, "input_blocks.1.0.extra.weight": torch.zeros(1)}
    with pytest.raises(RuntimeError, match=r"input_blocks\.1\.0\.extra\.weight"):
        ADMUNet(net.config).load_state_dict(extra, strict=True)


def test_gradients_reach_every_parameter(one_thread):
    torch.manual_seed(0)
    net = ADMUNet(config_from_flags(MANIFEST["cases"]["main"]))
    net.load_state_dict(seeded_weights(net))
    net(torch.randn(1, 3, 32, 32), torch.tensor([10])).square().mean().backward()
    assert [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()] == []


def test_a_fresh_network_predicts_zeros_as_guided_diffusions_does(one_thread):
    # guided-diffusion zero-initialises each residual branch's and the output's last layer.
    net = ADMUNet(config_from_flags(MANIFEST["cases"]["plain"]))
    with torch.no_grad():
        assert not net(torch.randn(1, 3, 32, 32), torch.tensor([3])).any()


def test_one_timestep_serves_the_whole_batch(one_thread):
    net = reference_net("plain")
    x = torch.from_numpy(REFERENCE["plain_x"])
    with torch.no_grad():
        assert torch.equal(net(x, torch.tensor(42)), net(x, torch.tensor([42, 42])))


def test_timestep_embedding_is_cosines_then_sines():
    emb = timestep_embedding(torch.tensor([0.0, 3.0]), 8)
    freqs = torch.exp(-np.log(10000.0) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)]))
    assert emb[0].tolist() == [1.0] * 4 + [0.0] * 4
    assert timestep_embedding(torch.tensor([1.0]), 7).shape == (1, 7)


def test_channel_mult_defaults_follow_guided_diffusion():
    assert ADMConfig(image_size=256).channel_mult == (1, 1, 2, 2, 4, 4)
    assert ADMConfig(image_size=64).channel_mult == (1, 2, 3, 4)
    assert ADMConfig(image_size=512, num_channels=256).channel_mult[0] == 0.5
    assert FFHQ256.attention_ds == {8, 16, 32} and FFHQ256.out_channels == 6


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_size=32), "no default channel_mult"),
    (dict(num_channels=48), "multiple of 32"),
    (dict(num_head_channels=48), "heads"),
    (dict(num_heads=3), "heads"),
    (dict(num_heads=0), "heads"),
    (dict(dropout=1.0), "dropout"),
])
def test_impossible_configurations_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ADMConfig(**kwargs)


def test_unknown_preset_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match="ffhq256"):
        adm_preset("ffhq1024")
