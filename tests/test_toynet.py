"""ToyNet: output shapes, the LPIPS form, files, a tiny training run and the shipped weights."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptscope.config import from_dict, read_toml
from adaptscope.embedded import toyfaces
from adaptscope.embedded import toynet as tn
from adaptscope.embedded import toynet_training as tt
from adaptscope.errors import WeightsError

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "experiments" / "pretrain-backbone.toml"


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return tn.ToyNet().eval()


@pytest.mark.parametrize("size", [32, 64])
def test_output_shapes(net, size):
    x = toyfaces.render_tensor("source", [1, 2, 3], size)
    with torch.no_grad():
        assert tuple(net.embed(x).shape) == (3, 128)
        feats = net.lpips_features(x)
        assert [tuple(f.shape) for f in feats] == [
            (3, 32, 16, 16), (3, 64, 8, 8), (3, 128, 4, 4), (3, 128, 2, 2)
        ]
        assert tuple(net.domain_logits(x).shape) == (3, len(toyfaces.DOMAINS))
        logits = net.attribute_logits(x)
        assert [tuple(lg.shape) for lg in logits] == [(3, a.levels) for a in toyfaces.ATTRIBUTES]
        pred = net.predict_attributes(x)
        assert pred.shape == (3, len(toyfaces.ATTRIBUTES)) and pred.dtype == torch.int64
        p = net.p_target(x, "babies")
        assert p.shape == (3,) and bool(((p >= 0) & (p <= 1)).all())


def test_p_target_is_the_two_way_softmax(net):
    x = toyfaces.render_tensor("babies", [7, 8], 32)
    with torch.no_grad():
        logits = net.domain_logits(x)
        two = torch.softmax(logits[:, [0, 2]], dim=1)[:, 1]
        torch.testing.assert_close(net.p_target(x, "babies"), two)
    with pytest.raises(ValueError, match="target domain"):
        net.p_target(x, "source")


def test_resizing_is_internal(net):
    x64 = toyfaces.render_tensor("sketches", [200_000], 64)
    x32 = torch.nn.functional.interpolate(x64, size=(32, 32), mode="bilinear",
                                          align_corners=False, antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(net.embed(x64), net.embed(x32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net.embed(torch.zeros(2, 1, 32, 32))


def test_lpips_weights_and_distance(net):
    w = net.lpips_weights
    feats = net.lpips_features(torch.zeros(1, 3, 32, 32))
    assert [t.shape[0] for t in w] == [f.shape[1] for f in feats]
    assert all(bool((t >= 0).all()) for t in w)
    assert abs(sum(t[0].item() for t in w) - 1.0) < 1e-6
    a = toyfaces.render_tensor("source", [1, 2], 32)
    b = toyfaces.render_tensor("source", [3, 4], 32)
    with torch.no_grad():
        same = net.lpips_distance(a, a)
        diff = net.lpips_distance(a, b)
    assert torch.allclose(same, torch.zeros(2), atol=1e-6)
    assert bool((diff > 1e-4).all()) and bool((diff <= 4).all())


def test_save_load_round_trip(tmp_path, net):
    path = tn.save_toynet(net, tmp_path / "t.pt", {"note": "x", "acc": {"domain_acc": 0.5}})
    loaded = tn.load_toynet(path)
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    x = toyfaces.render_tensor("sunglasses", [0, 1], 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(x), net.embed(x))
    assert tn.read_toynet_meta(path)["acc"] == {"domain_acc": 0.5}
    torch.load(path, weights_only=True)  # plain tensors and containers only
    assert path.stat().st_mode & 0o044 == 0o044  # readable by everyone, as a package asset


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_load_errors(tmp_path):
    with pytest.raises(WeightsError, match="pretrain backbone"):
        tn.load_toynet(tmp_path / "absent.pt")
    (tmp_path / "bad.pt").write_bytes(pickle.dumps(object()))
    with pytest.raises(WeightsError, match="arbitrary unpickling"):
        tn.load_toynet(tmp_path / "bad.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a ToyNet file"):
        tn.load_toynet(tmp_path / "other.pt")


def test_train_toynet_end_to_end_tiny(tmp_path):
    logs = []
    acc = tt.train_toynet(steps=3, batch=8, seed=1, size=16, out=tmp_path / "tiny.pt",
                          eval_per_domain=4, log=logs.append)
    assert 0 <= acc["domain_acc"] <= 1
    assert set(acc) >= {f"domain_acc/{d}" for d in toyfaces.DOMAINS}
    assert "attr_acc/eye_size/sunglasses" not in acc  # unobservable there
    assert "attr_acc/eye_size/source" in acc and "attr_acc/skin_tone" in acc
    meta = tn.read_toynet_meta(tmp_path / "tiny.pt")
    assert meta["heldout_accuracy"] == acc
    assert meta["recipe"]["steps"] == 3 and meta["recipe"]["size"] == 16
    assert any("held-out domain accuracy" in line for line in logs)


def test_training_indices_avoid_heldout_sets():
    for domain in toyfaces.DOMAINS:
        r = toyfaces.full_set(domain)
        assert r.stop <= tn.TRAIN_RANGE.start or tn.TRAIN_RANGE.stop <= r.start


def test_recipe_file_matches_defaults():
    recipe = from_dict(tt.ToyNetRecipe, read_toml(RECIPE), str(RECIPE))
    assert recipe == tt.ToyNetRecipe()


shipped = pytest.mark.skipif(not tn.default_asset().is_file(), reason="toynet.pt not built yet")


@shipped
def test_shipped_asset_is_small_and_documented():
    assert tn.default_asset().stat().st_size < 2_000_000
    meta = tn.read_toynet_meta()
    assert meta["heldout_accuracy"]["domain_acc"] > 0.98
    recipe = from_dict(tt.ToyNetRecipe, read_toml(RECIPE), str(RECIPE))
    assert {k: v for k, v in meta["recipe"].items() if k != "threads"} == {
        k: v for k, v in vars(recipe).items() if k != "threads"
    }


@shipped
def test_shipped_asset_classifies_rendered_images():
    net = tn.load_toynet()
    idx = np.arange(2_400, 2_412)
    for d, domain in enumerate(toyfaces.DOMAINS):
        start = toyfaces.full_set(domain).start
        x = toyfaces.render_tensor(domain, start + idx % 300, 32)
        with torch.no_grad():
            assert (net.domain_logits(x).argmax(1) == d).float().mean() >= 0.9, domain
            if domain != "source":
                assert net.p_target(x, domain).mean() > 0.9
            pred = net.predict_attributes(x).numpy()
        truth = toyfaces.attributes(domain, start + idx % 300)
        seen = toyfaces.observable(domain)
        assert (pred[:, seen] == truth[:, seen]).mean() > 0.8, domain
    src = toyfaces.render_tensor("source", np.arange(1_000_000, 1_000_012), 64)
    with torch.no_grad():
        assert net.p_target(src, "sunglasses").mean() < 0.1
