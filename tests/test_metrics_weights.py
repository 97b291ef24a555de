"""Backbone weight resolution (search order, download, offline error) and trunk loading."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from adaptscope.metrics import weights
from adaptscope.metrics.backbones import build_lpips
from adaptscope.metrics.weights import WeightsNotFound, resolve_weights


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Isolated caches: nothing from the real home directory is found or written."""
    dirs = {name: tmp_path / name for name in ("explicit", "env", "torch", "cache")}
    monkeypatch.setenv("TORCH_HOME", str(dirs["torch"]))
    monkeypatch.setenv("ADAPTSCOPE_CACHE", str(dirs["cache"]))
    monkeypatch.delenv("ADAPTSCOPE_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("ADAPTSCOPE_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "_download", _no_network)
    return dirs


def _no_network(url: str, dest: Path) -> None:
    raise urllib.error.URLError("network is unreachable")


def put(folder: Path, name: str = "vgg16-397923af.pth") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"x")
    return path


def test_search_order(places, monkeypatch):
    hub = put(places["torch"] / "hub" / "checkpoints")
    assert resolve_weights("vgg") == hub
    cached = put(places["cache"] / "weights", "alexnet-owt-7be5be79.pth")
    assert resolve_weights("alex") == cached
    env = put(places["env"])
    monkeypatch.setenv("ADAPTSCOPE_WEIGHTS_DIR", str(places["env"]))
    assert resolve_weights("vgg") == env
    explicit = put(places["explicit"])
    assert resolve_weights("vgg", places["explicit"]) == explicit


def test_offline_error_names_file_places_and_fix(places):
    with pytest.raises(WeightsNotFound) as info:
        resolve_weights("vgg", places["explicit"])
    err = info.value
    assert isinstance(err, FileNotFoundError)
    msg = str(err)
    assert "vgg16-397923af.pth" in msg
    assert "network is unreachable" in msg
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in msg
    for folder in (places["explicit"], places["torch"] / "hub" / "checkpoints",
                   places["cache"] / "weights"):
        assert str(folder) in msg
    assert str(places["cache"] / "weights" / "vgg16-397923af.pth") in msg  # where to put it
    assert not (places["cache"] / "weights" / "vgg16-397923af.pth").exists()


def test_download_goes_to_adaptscope_cache(places, monkeypatch):
    calls = []

    def fake_download(url: str, dest: Path) -> None:
        calls.append((url, dest))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"weights")

    monkeypatch.setattr(weights, "_download", fake_download)
    path = resolve_weights("inception")
    assert path == places["cache"] / "weights" / "inception-2015-12-05.pt"
    assert calls == [(weights.BACKBONES["inception"].url, path)]
    assert resolve_weights("inception") == path and len(calls) == 1  # found, not re-fetched


def test_offline_switch_and_explicit_folder(places, monkeypatch):
    monkeypatch.setenv("ADAPTSCOPE_OFFLINE", "1")
    monkeypatch.setattr(weights, "_download", lambda *a: pytest.fail("download attempted"))
    with pytest.raises(WeightsNotFound, match="ADAPTSCOPE_OFFLINE"):
        resolve_weights("alex")
    shipped = put(places["explicit"], "alexnet-owt-7be5be79.pth")
    assert resolve_weights("alex", places["explicit"]) == shipped  # found, offline


def random_features(net: str) -> torch.nn.Sequential:
    """A torchvision trunk (`features`) with random weights, standing in for ImageNet's;
    built without the classifier, which the trunk files' loader ignores anyway."""
    if net == "vgg":
        return torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    return torchvision.models.AlexNet().features


def save_trunk(folder: Path, features: torch.nn.Module, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    torch.save(state, folder / name)
    return folder / name


@pytest.mark.parametrize(
    ("net", "filename", "last"),
    [("alex", "alexnet-owt-7be5be79.pth", 12), ("vgg", "vgg16-397923af.pth", 30)],
)
def test_build_lpips_loads_torchvision_trunk(places, net, filename, last):
    torch.manual_seed(3)
    features = random_features(net).eval()
    save_trunk(places["explicit"], features, filename)
    model = build_lpips(net, places["explicit"])
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ours = model.net(model.scaling_layer(x))[-1]
        theirs = features[:last](model.scaling_layer(x))
    torch.testing.assert_close(ours, theirs)
    assert not model.training


def test_build_lpips_rejects_wrong_and_damaged_files(places):
    torch.manual_seed(0)
    save_trunk(places["explicit"], random_features("alex"), "vgg16-397923af.pth")
    with pytest.raises(ValueError, match="vgg16-397923af.pth"):
        build_lpips("vgg", places["explicit"])
    (places["explicit"] / "alexnet-owt-7be5be79.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be loaded"):
        build_lpips("alex", places["explicit"])
