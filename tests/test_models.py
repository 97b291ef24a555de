"""StyleGAN2: the reference checkpoint layout, numerical parity, resampling ops, features."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaptscope.models import (
    CheckpointError,
    Discriminator,
    Generator,
    load_checkpoint,
    save_checkpoint,
)
from adaptscope.models.ops import fused_leaky_relu, make_kernel, upfirdn2d

FIXTURES = Path(__file__).parent / "fixtures"
TINY = {4: 16, 8: 16, 16: 8}


def tiny_pair(seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    return Generator(16, 32, 2, channels=TINY), Discriminator(16, channels=TINY)


# --- the reference layout and numbers ------------------------------------------------------


def _seeded_reference_pair() -> tuple[Generator, Discriminator]:
    # Same construction as the fixture script ran with the reference implementation: seeded
    # init, then every parameter perturbed so zero-initialised biases are exercised too.
    torch.manual_seed(0)
    g, d = Generator(256, 512, 8, 2), Discriminator(256, 2)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in list(g.parameters()) + list(d.parameters()):
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return g, d


def test_state_dict_names_and_shapes_match_the_reference_256px_config_f():
    expected = json.loads((FIXTURES / "reference_256_state_dict.json").read_text())
    g, d = Generator(256), Discriminator(256)
    assert [[k, list(v.shape)] for k, v in g.state_dict().items()] == expected["generator"]
    assert [[k, list(v.shape)] for k, v in d.state_dict().items()] == expected["discriminator"]
    assert g.n_latent == 14 and g.num_layers == 13


@pytest.mark.slow
def test_outputs_match_the_reference_implementation_numerically():
    ref = np.load(FIXTURES / "reference_256.npz")
    g, d = _seeded_reference_pair()
    gen = torch.Generator().manual_seed(2)
    z, z2 = torch.randn(2, 512, generator=gen), torch.randn(2, 512, generator=gen)
    x = torch.randn(4, 3, 256, 256, generator=gen)
    with torch.no_grad():
        img, _ = g([z], randomize_noise=False)
        mix, _ = g([z, z2], inject_index=5, randomize_noise=False)
        logits = d(x)
    np.testing.assert_allclose(img[:, :, 96:160, 96:160].numpy(), ref["image_crop"], atol=1e-4)
    np.testing.assert_allclose(img.double().mean((2, 3)).numpy(), ref["image_mean"], atol=1e-5)
    np.testing.assert_allclose(mix[:, :, 96:160, 96:160].numpy(), ref["mix_crop"], atol=1e-4)
    np.testing.assert_allclose(logits.numpy(), ref["d_logits"], rtol=1e-5, atol=1e-5)


# --- resampling and activation against slow, obviously correct versions --------------------


def slow_upfirdn2d(x, kernel, up, down, pad0, pad1):
    """Zero insertion, padding (or cropping), true 2-D convolution, decimation; loops only."""
    n, c, h, w = x.shape
    u = torch.zeros(n, c, h * up, w * up, dtype=torch.float64)
    u[:, :, ::up, ::up] = x.double()
    hp, wp = h * up + pad0 + pad1, w * up + pad0 + pad1
    p = torch.zeros(n, c, hp, wp, dtype=torch.float64)
    for i in range(hp):
        for j in range(wp):
            si, sj = i - pad0, j - pad0
            if 0 <= si < h * up and 0 <= sj < w * up:
                p[:, :, i, j] = u[:, :, si, sj]
    k = kernel.double()
    kh, kw = k.shape
    out = torch.zeros(n, c, hp - kh + 1, wp - kw + 1, dtype=torch.float64)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            acc = torch.zeros(n, c, dtype=torch.float64)
            for a in range(kh):
                for b in range(kw):
                    acc += p[:, :, i + a, j + b] * k[kh - 1 - a, kw - 1 - b]
            out[:, :, i, j] = acc
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize(
    "up,down,pad",
    [(2, 1, (2, 1)), (1, 2, (1, 1)), (1, 2, (2, 2)), (1, 1, (1, 1)), (1, 1, (2, 2)),
     (2, 1, (1, 1)), (2, 1, (0, -1))],
    ids=["up-rgb", "down-skip", "down-conv", "blur-upconv", "blur-pad2", "up-pad1", "crop"],
)
def test_upfirdn2d_matches_slow_definition(up, down, pad):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5)
    kernel = make_kernel([1, 3, 3, 1]) * (4 if up > 1 else 1)
    kernel = kernel + 0.01 * torch.arange(16.0).view(4, 4)  # asymmetric: catches flips
    got = upfirdn2d(x, kernel, up=up, down=down, pad=pad)
    want = slow_upfirdn2d(x, kernel, up, down, *pad)
    assert got.shape == want.shape
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_fused_leaky_relu_is_biased_scaled_leaky_relu():
    x, b = torch.randn(3, 4, 2, 2), torch.randn(4)
    want = F.leaky_relu(x + b.view(1, 4, 1, 1), 0.2) * 2**0.5
    torch.testing.assert_close(fused_leaky_relu(x, b), want)
    assert fused_leaky_relu(torch.tensor([[-1.0]])).item() == pytest.approx(-0.2 * 2**0.5)


# --- behaviour ------------------------------------------------------------------------------


def test_features_have_documented_lengths_and_shapes():
    g, d = tiny_pair()
    img, latent, feats = g([torch.randn(3, 32)], return_latents=True, return_features=True)
    assert img.shape == (3, 3, 16, 16) and latent.shape == (3, g.n_latent, 32)
    assert len(feats) == 2 * 4 - 3 == g.num_layers
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 4, 4), (16, 8, 8), (16, 8, 8),
                                                  (8, 16, 16), (8, 16, 16)]
    assert d(img).shape == (3, 1)
    dfeats = d.features(img)
    assert [tuple(f.shape[1:]) for f in dfeats] == [(8, 16, 16), (16, 8, 8), (16, 4, 4)]
    # the residual branches: fromRGB, then conv1 (same size) and conv2 (halved) of each block
    branches = d.features(img, "branches")
    assert [tuple(f.shape[1:]) for f in branches] == [(8, 16, 16), (8, 16, 16), (16, 8, 8),
                                                     (16, 8, 8), (16, 4, 4)]
    torch.testing.assert_close(branches[2], d.convs[1].conv2(d.convs[1].conv1(dfeats[0])))
    assert len(d.features(img, blocks=2)) == 2
    assert d.block_resolutions() == [16, 8, 4]


def test_full_size_generator_has_13_feature_maps():
    torch.manual_seed(0)
    g = Generator(256, 16, 1, channels={r: 4 for r in (4, 8, 16, 32, 64, 128, 256)})
    _, _, feats = g([torch.randn(1, 16)], return_features=True)
    assert len(feats) == 13 and feats[-1].shape[-1] == 256


def test_gradients_reach_every_trainable_parameter():
    g, d = tiny_pair()
    # Two styles so every style index is used; noise weights start at zero, so perturb them.
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.1)
    img, _ = g([torch.randn(4, 32), torch.randn(4, 32)], inject_index=2)
    d(img).sum().backward()
    for name, p in list(g.named_parameters()) + list(d.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_deterministic_with_fixed_noise_and_seed():
    g, _ = tiny_pair()
    with torch.no_grad():  # noise strengths start at zero; make the noise matter
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.5)
    z = torch.randn(2, 32)
    a, _ = g([z], randomize_noise=False)
    b, _ = g([z], randomize_noise=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.manual_seed(5)
    c, _ = g([z])
    torch.manual_seed(5)
    e, _ = g([z])
    torch.testing.assert_close(c, e, rtol=0, atol=0)
    assert not torch.equal(a, c)  # random noise does change the image


def test_truncation_moves_towards_the_mean_latent():
    g, _ = tiny_pair()
    torch.manual_seed(0)
    mean = g.mean_latent(256)
    z = torch.randn(2, 32)
    _, w1 = g([z], return_latents=True, randomize_noise=False)
    _, w0 = g([z], return_latents=True, truncation=0.0, truncation_latent=mean,
              randomize_noise=False)
    torch.testing.assert_close(w0, mean.unsqueeze(1).expand_as(w0))
    assert not torch.allclose(w1, w0)


def test_minibatch_stddev_accepts_batches_not_divisible_by_four():
    _, d = tiny_pair()
    assert d(torch.randn(6, 3, 16, 16)).shape == (6, 1)
    assert d(torch.randn(3, 3, 16, 16)).shape == (3, 1)


# --- checkpoints ----------------------------------------------------------------------------


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))


def test_adaptscope_checkpoint_round_trip(tmp_path):
    g, d = tiny_pair()
    g_ema, _ = tiny_pair(1)
    path = tmp_path / "run.pt"
    save_checkpoint(path, g_ema=g_ema, g=g, d=d, step=7)
    ck = load_checkpoint(path)
    assert ck.kind == "adaptscope" and ck.extra["step"] == 7
    assert _same(ck.g, g) and _same(ck.d, d) and _same(ck.g_ema, g_ema)
    assert ck.g_ema.config == g_ema.config


def test_reference_training_checkpoint_with_args_namespace(tmp_path):
    g, d = tiny_pair()
    opt = torch.optim.Adam(g.parameters())
    path = tmp_path / "550000.pt"
    torch.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g.state_dict(),
                "g_optim": opt.state_dict(), "d_optim": opt.state_dict(),
                "args": argparse.Namespace(size=16, r1=10.0)}, path)
    ck = load_checkpoint(path)
    assert ck.kind == "training" and _same(ck.g, g) and _same(ck.d, d)
    assert ck.g_ema.channels == {4: 16, 8: 16, 16: 8} and ck.g_ema.n_mlp == 2
    assert "g_optim" in ck.extra


def test_converted_and_prefixed_adapted_checkpoints(tmp_path):
    g, _ = tiny_pair()
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(32)}, tmp_path / "conv.pt")
    ck = load_checkpoint(tmp_path / "conv.pt")
    assert ck.kind == "converted" and ck.latent_avg is not None and _same(ck.g_ema, g)
    prefixed = {f"module.{k}": v for k, v in g.state_dict().items()}
    torch.save({"g_ema": prefixed}, tmp_path / "adapted.pt")
    assert _same(load_checkpoint(tmp_path / "adapted.pt").g_ema, g)
    torch.save(g.state_dict(), tmp_path / "bare.pt")
    assert load_checkpoint(tmp_path / "bare.pt").g is None


def test_reference_widths_are_recognised_as_channel_multiplier(tmp_path):
    g = Generator(64, 16, 1, channel_multiplier=1)
    torch.save({"g_ema": g.state_dict()}, tmp_path / "ref64.pt")
    ck = load_checkpoint(tmp_path / "ref64.pt")
    assert ck.g_ema.config["channels"] is None and ck.g_ema.channel_multiplier == 1


def test_wrong_resolution_is_refused(tmp_path):
    g, _ = tiny_pair()
    torch.save({"g_ema": g.state_dict()}, tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="16 px generator but 256 px"):
        load_checkpoint(tmp_path / "g.pt", size=256)


def test_missing_tensor_is_named(tmp_path):
    g, _ = tiny_pair()
    state = g.state_dict()
    del state["to_rgbs.0.bias"]
    torch.save({"g_ema": state}, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="to_rgbs.0.bias"):
        load_checkpoint(tmp_path / "broken.pt")


def test_truncated_file_is_refused(tmp_path):
    g, _ = tiny_pair()
    path = tmp_path / "g.pt"
    torch.save({"g_ema": g.state_dict()}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_checkpoint(path)


def test_non_checkpoint_files_are_refused(tmp_path):
    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "notes.pt")
    torch.save({"weights": [1, 2]}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no generator"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


class _Payload:
    def __reduce__(self):
        return (print, ("executed",))


def test_files_needing_arbitrary_unpickling_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": _Payload()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="arbitrary unpickling"):
        load_checkpoint(path)
    (tmp_path / "network-snapshot.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(CheckpointError, match="convert"):
        load_checkpoint(tmp_path / "network-snapshot.pkl")


def test_printing_a_network_shows_its_sizes():
    g, d = tiny_pair()
    text = repr(g)
    assert f"size={g.size}, style_dim={g.style_dim}" in text
    assert "ModulatedConv2d(" in text and "kernel_size=3, upsample=True" in text
    assert f"size={d.size}" in repr(d) and "EqualConv2d(3, " in repr(d)
    assert g.device == torch.device("cpu")
