"""Realism classifier: trains on a separable toy problem, saves weights-only, scores p_t."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from adaptscope.errors import WeightsNotFound
from adaptscope.metrics import weights
from adaptscope.metrics.realism import load_realism_classifier, realism_score
from adaptscope.train.realism_classifier import (
    build_realism_classifier,
    train_realism_classifier,
)


def noise_images(n: int, colour: int, seed: int, size: int = 24) -> torch.Tensor:
    """Noisy images dominated by one colour channel, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 0.8 - 0.9
    x[:, colour] += 1.0
    return x.clamp(-1, 1)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("ADAPTSCOPE_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(weights, "_download", lambda url, dest: (_ for _ in ()).throw(
        OSError("no network")))
    return tmp_path


def test_trains_from_scratch_to_high_accuracy_and_reloads(offline):
    red, blue = noise_images(20, 0, seed=1), noise_images(20, 2, seed=2)
    out = offline / "realism.pt"
    result = train_realism_classifier(red, blue, out, image_size=32, epochs=3, batch_size=8,
                                      log=lambda s: None)
    assert result.init == "scratch"  # no ImageNet weights anywhere, so recorded as scratch
    assert result.n_val == 8 and result.n_train == 32
    assert result.val_accuracy >= 0.9
    obj = torch.load(out, weights_only=True)
    assert obj["meta"]["init"] == "scratch"
    assert obj["meta"]["val_accuracy"] == result.val_accuracy

    model = load_realism_classifier(out)
    assert model.meta["image_size"] == 32
    p_red = realism_score(noise_images(10, 0, seed=3), model)
    p_blue = realism_score(noise_images(10, 2, seed=4), model)
    assert p_red > 0.8 and p_blue < 0.2


def test_source_sampler_is_an_alternative_to_source_images(offline):
    calls = []

    def sample_source(n: int) -> torch.Tensor:
        calls.append(n)
        return noise_images(n, 2, seed=len(calls), size=16)  # another size than the target

    result = train_realism_classifier(noise_images(12, 0, seed=5), out=offline / "r.pt",
                                      sample_source=sample_source, image_size=16, epochs=5,
                                      batch_size=8, log=lambda s: None)
    assert sum(calls) == 12
    assert result.val_accuracy >= 0.75
    with pytest.raises(ValueError, match="exactly one"):
        train_realism_classifier(noise_images(4, 0, 1), noise_images(4, 2, 1), offline / "x.pt",
                                 sample_source=sample_source)


def test_imagenet_weights_are_used_when_they_resolve(offline):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    folder = offline / "weights"
    folder.mkdir()
    torch.save(reference.state_dict(), folder / "resnet18-f37072fd.pth")
    model, init = build_realism_classifier(32, None, folder)
    assert init == "imagenet"
    torch.testing.assert_close(model.net.conv1.weight, reference.conv1.weight)
    assert model.net.fc.out_features == 1
    _, init = build_realism_classifier(32, None, offline / "elsewhere")
    assert init == "scratch"
    with pytest.raises(WeightsNotFound, match="resnet18-f37072fd.pth"):
        build_realism_classifier(32, True, offline / "elsewhere")


class StandInScorer(nn.Module):
    """Stand-in of the scorer interface: p_target(x), the mean brightness in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def p_target(self, x: torch.Tensor) -> torch.Tensor:
        return (x.mean(dim=(1, 2, 3)) + 1) / 2 * self.scale


def test_realism_score_of_any_scorer_quantises():
    x = torch.full((3, 3, 4, 4), 0.3)
    expected = (round(1.3 * 127.5) / 127.5 - 1 + 1) / 2
    assert realism_score(x, StandInScorer()) == pytest.approx(expected)
    assert realism_score(x, StandInScorer(), quantize=False) == pytest.approx(0.65)


def write_folder(folder: Path, images: torch.Tensor) -> Path:
    folder.mkdir(parents=True)
    for k, img in enumerate(((images + 1) * 127.5).round().to(torch.uint8)):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{k}.png")
    return folder


def test_cli_trains_from_folders(offline):
    from adaptscope.cli import app

    target = write_folder(offline / "target", noise_images(10, 0, seed=7))
    source = write_folder(offline / "source", noise_images(10, 2, seed=8))
    out = offline / "clf.pt"
    runner = CliRunner()
    res = runner.invoke(app, ["realism", "train", "--target", str(target), "--source",
                              str(source), "--out", str(out), "--size", "16", "--epochs", "2",
                              "--batch-size", "8", "--scratch"])
    assert res.exit_code == 0, res.output
    assert "held-out accuracy" in res.output and out.is_file()
    res = runner.invoke(app, ["realism", "train", "--target", str(offline / "missing"),
                              "--source", str(source), "--out", str(out)])
    assert res.exit_code == 2 and "missing" in res.output  # bad input


def test_source_sampler_draws_seeded_images_from_a_checkpoint(tmp_path):
    from adaptscope.models.checkpoint import save_checkpoint
    from adaptscope.models.stylegan2 import Generator
    from adaptscope.train.realism_classifier import source_sampler

    torch.manual_seed(0)
    g = Generator(16, style_dim=8, n_mlp=1, channels={4: 8, 8: 8, 16: 8})
    save_checkpoint(tmp_path / "g.pt", g_ema=g)
    a = source_sampler(tmp_path / "g.pt", seed=3)
    first = a(3)
    assert first.shape == (3, 3, 16, 16) and first.abs().max() <= 1
    torch.testing.assert_close(source_sampler(tmp_path / "g.pt", seed=3)(3), first)
    assert not torch.allclose(a(3), first)  # later draws are new images
