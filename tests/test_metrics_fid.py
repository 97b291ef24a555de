"""FID: parity with clean-fid's compute_fid under one feature extractor; the stats cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cleanfid import fid as cleanfid
from PIL import Image
from torch import nn

from adaptscope.embedded.backbones import ToyExtractor
from adaptscope.images import to_uint8_values
from adaptscope.metrics import fid as fidmod
from adaptscope.metrics.extractors import FunctionExtractor, InceptionExtractor
from adaptscope.metrics.fid import fid_from_generator, fid_from_images, real_statistics

DIM = 6
_G = torch.Generator().manual_seed(0)
_PROJ = torch.randn(3 * 4 * 4, DIM, generator=_G) / 8


def features(x: torch.Tensor) -> torch.Tensor:
    """A fixed nonlinear projection of pooled pixels: a stand-in for Inception."""
    return torch.tanh(F.adaptive_avg_pool2d(x / 255.0, 4).flatten(1) @ _PROJ * 4)


def extractor() -> FunctionExtractor:
    return FunctionExtractor(features, name="test-projection", input_size=299)


def write_pngs(folder: Path, images: torch.Tensor) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(to_uint8_values(images).to(torch.uint8)):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{k:03d}.png")
    return folder


def random_images(n: int, size: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 5, 5, generator=g) * 1.6 - 0.8 + shift
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def clean_fid(**kwargs) -> float:
    return float(cleanfid.compute_fid(
        mode="clean", custom_feat_extractor=features, num_workers=0, batch_size=8,
        device=torch.device("cpu"), verbose=False, use_dataparallel=False, **kwargs))


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("real")
    write_pngs(folder, random_images(20, 32, seed=1))
    write_pngs(folder / "sub", random_images(6, 48, seed=2))  # nested, another size
    return folder


def test_folder_fid_matches_cleanfid(tmp_path, real_dir):
    gen = random_images(18, 32, seed=3, shift=0.3)
    gen_dir = write_pngs(tmp_path / "gen", gen)
    real = real_statistics(real_dir, extractor(), cache_folder=tmp_path / "cache")
    assert real.n_images == 26
    ours = fid_from_images(gen, real, extractor())
    theirs = clean_fid(fdir1=str(gen_dir), fdir2=str(real_dir))
    assert theirs > 0.01  # the sets differ, so the comparison means something
    assert ours == pytest.approx(theirs, rel=1e-3)


class Gen:
    """A deterministic 'generator' of 32 px images, clean-fid style: its k-th call gives the
    same batch whatever the global RNG did (clean-fid's DataLoader draws from it)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:  # clean-fid convention: [0, 255]
        g = torch.Generator().manual_seed(100 + self.calls)
        self.calls += 1
        low = torch.randn(len(z), 3, 5, 5, generator=g).tanh() * 1.1  # slightly out of range
        img = F.interpolate(low, size=(32, 32), mode="bicubic", align_corners=False)
        return (img + 1) * 127.5

    def sample(self, n: int) -> torch.Tensor:  # adaptscope convention: [-1, 1]
        return self(torch.empty(n, 4)) / 127.5 - 1


def test_generator_mode_matches_cleanfid_without_quantisation(tmp_path, real_dir):
    real = real_statistics(real_dir, extractor(), cache_folder=tmp_path)
    ours = fid_from_generator(Gen().sample, 16, real, extractor(), batch_size=8, quantize=False)
    theirs = clean_fid(gen=Gen(), fdir2=str(real_dir), num_gen=16, z_dim=4)
    assert ours == pytest.approx(theirs, rel=1e-3)


def test_quantised_generator_equals_saved_pngs(tmp_path, real_dir):
    real = real_statistics(real_dir, extractor(), cache_folder=tmp_path)
    gen = Gen()
    images = torch.cat([gen.sample(n) for n in (5, 5, 5, 1)])
    ours = fid_from_generator(Gen().sample, 16, real, extractor(), batch_size=5)
    theirs = clean_fid(fdir1=str(write_pngs(tmp_path / "png", images)), fdir2=str(real_dir))
    assert ours == pytest.approx(theirs, rel=1e-3)
    unquantised = fid_from_images(images, real, extractor(), quantize=False)
    assert unquantised != pytest.approx(ours, rel=1e-6)  # quantisation is not a no-op here


def test_statistics_are_cached_by_content(tmp_path, monkeypatch, real_dir):
    monkeypatch.setenv("ADAPTSCOPE_CACHE", str(tmp_path / "cache"))
    first = real_statistics(real_dir, extractor())
    files = list((tmp_path / "cache" / "fid-stats").glob("*"))
    assert len(files) == 1 and files[0].suffix == ".npz"

    def fail(*args, **kwargs):
        raise AssertionError("statistics were recomputed")

    monkeypatch.setattr(fidmod, "extract_features", fail)
    again = real_statistics(real_dir, extractor())
    np.testing.assert_array_equal(again.mu, first.mu)
    np.testing.assert_array_equal(again.sigma, first.sigma)
    copy = tmp_path / "renamed"
    copy.mkdir()
    for k, p in enumerate(sorted(real_dir.rglob("*.png"))):
        (copy / f"x{k}.png").write_bytes(p.read_bytes())
    real_statistics(copy, extractor())  # same content under other names: a cache hit
    other = FunctionExtractor(features, name="another-backbone", input_size=299)
    with pytest.raises(AssertionError, match="recomputed"):
        real_statistics(real_dir, other)
    (copy / "x0.png").write_bytes((real_dir / "001.png").read_bytes())
    with pytest.raises(AssertionError, match="recomputed"):
        real_statistics(copy, extractor())


def test_tensor_sources_uint8_and_unit_range_agree(tmp_path):
    images = random_images(12, 32, seed=8)
    as_uint8 = to_uint8_values(images).to(torch.uint8)
    a = real_statistics(images, extractor(), cache=False)
    b = real_statistics(as_uint8, extractor(), cache=False)
    np.testing.assert_allclose(a.mu, b.mu)
    c = real_statistics(as_uint8, extractor(), resolution=16, cache=False)
    assert not np.allclose(c.mu, a.mu)  # images were brought to 16 px first


class StandInToyNet(nn.Module):
    """Stand-in of ToyNet's FID interface: embed() of [-1, 1] images."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.seen: list[torch.Tensor] = []

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return self.lin(x.mean(dim=(2, 3)))


def test_toy_extractor_feeds_unit_range_at_native_size():
    net = StandInToyNet()
    ext = ToyExtractor(net)
    assert ext.input_size is None and ext.name.startswith("toy/")
    images = random_images(5, 24, seed=4)
    feats = fidmod.extract_features(fidmod._generated(images, True), ext)
    assert feats.shape == (5, 4)
    x = net.seen[0]
    assert x.shape == (5, 3, 24, 24)
    torch.testing.assert_close(x, to_uint8_values(images) / 127.5 - 1)
    assert ToyExtractor(StandInToyNet()).name != ext.name  # weights are part of the name


def test_inception_extractor_loads_resolved_torchscript(tmp_path, monkeypatch):
    from adaptscope.metrics import weights

    class Layers(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(3, 2048, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(F.adaptive_avg_pool2d(x, 1))

    class FakeInception(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = Layers()

        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            return self.layers(x)

    fake = FakeInception()
    torch.jit.script(fake).save(str(tmp_path / "inception-2015-12-05.pt"))
    monkeypatch.setattr(weights, "_download", lambda *a: pytest.fail("download attempted"))
    ext = InceptionExtractor(weights_dir=tmp_path)
    x = torch.rand(2, 3, 299, 299) * 255
    out = ext(x)
    assert out.shape == (2, 2048)
    torch.testing.assert_close(out, fake.layers((x - 128) / 128).flatten(1))
