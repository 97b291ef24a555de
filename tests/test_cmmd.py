"""CMMD and its CLIP embedding.

Every expected CMMD value is computed here from the kernel's definition by explicit double loops
over the points (or in closed form by hand), never with the module under test; the extractor is
checked against an independent preprocessing written here and against the model loaded directly
with transformers, on a tiny random-weight CLIP saved where the resolver looks (no real weights
exist on this machine, and nothing is downloaded)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from adaptscope.errors import WeightsError, WeightsNotFound
from adaptscope.metrics import cmmd as cmmd_module
from adaptscope.metrics import weights
from adaptscope.metrics.cmmd import cmmd
from adaptscope.metrics.extractors import CLIPExtractor
from adaptscope.metrics.fid import real_features
from adaptscope.metrics.weights import resolve_weights_dir

# --- the estimator, by hand ------------------------------------------------------------------


def kernel(x, y, sigma: float) -> float:
    return math.exp(-sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) / (2 * sigma**2))


def by_loops(xs, ys, sigma: float, scale: float) -> dict[str, float]:
    """Both estimators from their sums, one kernel value at a time."""
    m, n = len(xs), len(ys)
    xx = [[kernel(a, b, sigma) for b in xs] for a in xs]
    yy = [[kernel(a, b, sigma) for b in ys] for a in ys]
    xy = sum(kernel(a, b, sigma) for a in xs for b in ys)
    off_x = sum(xx[i][j] for i in range(m) for j in range(m) if i != j)
    off_y = sum(yy[i][j] for i in range(n) for j in range(n) if i != j)
    all_x = sum(map(sum, xx))
    all_y = sum(map(sum, yy))
    return {
        "biased": scale * (all_x / m**2 + all_y / n**2 - 2 * xy / (m * n)),
        "unbiased": scale * (off_x / (m * (m - 1)) + off_y / (n * (n - 1)) - 2 * xy / (m * n)),
        "a_x": off_x / (m * (m - 1)),  # mean off-diagonal kernel value of each set
        "a_y": off_y / (n * (n - 1)),
    }


def unit_rows(rng, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(("m", "n", "d", "sigma", "scale", "unit"), [
    (5, 7, 4, 1.5, 1000.0, False),
    (6, 4, 8, 10.0, 1000.0, True),  # the reference's setting: unit vectors, sigma 10, x 1000
    (3, 3, 2, 0.4, 1.0, False),
])
def test_both_estimators_equal_the_double_loops(m, n, d, sigma, scale, unit):
    rng = np.random.default_rng(m * 100 + n)
    x = unit_rows(rng, m, d) if unit else rng.normal(size=(m, d))
    y = unit_rows(rng, n, d) if unit else rng.normal(size=(n, d)) + 0.3
    expected = by_loops(x.tolist(), y.tolist(), sigma, scale)
    got = cmmd(x, y, sigma=sigma, scale=scale)
    assert got.biased == pytest.approx(expected["biased"], rel=1e-9, abs=1e-12 * scale)
    assert got.unbiased == pytest.approx(expected["unbiased"], rel=1e-9, abs=1e-12 * scale)
    assert tuple(got) == (got.biased, got.unbiased)  # a (biased, unbiased) tuple


def test_known_closed_forms():
    s = math.exp(-9 / (2 * 3.0**2))  # k(0, 3) at sigma 3: exp(-1/2)
    # X = Y = {0, 3}: the V-statistic is exactly 0; the U-statistic keeps the cross pairs
    # i = j: 2 s - 2 (1 + 1 + 2 s) / 4 = s - 1.
    got = cmmd([[0.0], [3.0]], [[0.0], [3.0]], sigma=3.0, scale=1.0)
    assert got.biased == pytest.approx(0.0, abs=1e-15)
    assert got.unbiased == pytest.approx(s - 1.0, rel=1e-12)
    # X = {0, 0}, Y = {2, 2}: every within-set value is 1, every cross value exp(-4 / 8), so
    # both estimators are 2 (1 - exp(-1/2)), times the scale.
    got = cmmd([[0.0], [0.0]], [[2.0], [2.0]], sigma=2.0, scale=1000.0)
    assert got.biased == pytest.approx(2000 * (1 - math.exp(-0.5)), rel=1e-12)
    assert got.unbiased == pytest.approx(2000 * (1 - math.exp(-0.5)), rel=1e-12)


def test_biased_minus_unbiased_is_the_diagonal_correction():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(9, 3))
    loops = by_loops(x.tolist(), y.tolist(), 2.0, 1000.0)
    got = cmmd(x, y, sigma=2.0, scale=1000.0)
    correction = 1000.0 * ((1 - loops["a_x"]) / 4 + (1 - loops["a_y"]) / 9)
    assert correction > 0
    assert got.biased - got.unbiased == pytest.approx(correction, rel=1e-9)


def test_identical_sets_biased_zero_unbiased_negative():
    x = unit_rows(np.random.default_rng(3), 8, 16)
    loops = by_loops(x.tolist(), x.tolist(), 10.0, 1000.0)
    got = cmmd(x, x)
    assert got.biased == pytest.approx(0.0, abs=1e-9)
    assert got.unbiased == pytest.approx(-2 * 1000.0 * (1 - loops["a_x"]) / 8, rel=1e-8)
    assert got.unbiased < 0


def test_same_distribution_unbiased_averages_zero_biased_stays_positive():
    """Independent draws of one distribution: the U-statistic is centred on 0, the V-statistic
    (the squared distance of two mean embeddings) is never negative and biased upwards."""
    rng = np.random.default_rng(0)
    draws = [cmmd(rng.normal(size=(6, 3)), rng.normal(size=(6, 3)), sigma=1.0, scale=1.0)
             for _ in range(400)]
    unbiased = np.array([d.unbiased for d in draws])
    biased = np.array([d.biased for d in draws])
    se = unbiased.std(ddof=1) / math.sqrt(len(draws))
    assert abs(unbiased.mean()) < 4 * se
    assert biased.min() >= 0
    assert biased.mean() > 20 * biased.std(ddof=1) / math.sqrt(len(draws))


def test_defaults_are_sigma_10_and_scale_1000_and_both_are_honoured():
    rng = np.random.default_rng(11)
    x, y = unit_rows(rng, 5, 6), unit_rows(rng, 6, 6)
    default = cmmd(x, y)
    loops = by_loops(x.tolist(), y.tolist(), 10.0, 1000.0)
    assert default.biased == pytest.approx(loops["biased"], rel=1e-9)
    assert default.unbiased == pytest.approx(loops["unbiased"], rel=1e-9)
    unscaled = cmmd(x, y, scale=1.0)
    assert unscaled.biased * 1000 == pytest.approx(default.biased, rel=1e-12)
    assert unscaled.unbiased * 1000 == pytest.approx(default.unbiased, rel=1e-12)
    narrow = cmmd(x, y, sigma=0.7)
    loops = by_loops(x.tolist(), y.tolist(), 0.7, 1000.0)
    assert narrow.biased == pytest.approx(loops["biased"], rel=1e-9)
    assert narrow.biased != pytest.approx(default.biased, rel=1e-3)
    # The kernel depends on |x - y| / sigma only: scaling the points and sigma together is
    # the identity.
    scaled = cmmd(3 * x, 3 * y, sigma=2.1)
    assert scaled.biased == pytest.approx(narrow.biased, rel=1e-9)
    assert scaled.unbiased == pytest.approx(narrow.unbiased, rel=1e-9)


def test_row_blocks_give_the_same_sums(monkeypatch):
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(13, 3)), rng.normal(size=(9, 3))
    monkeypatch.setattr(cmmd_module, "_BLOCK_ELEMENTS", 20)  # two rows of 9 or 13 per block
    got = cmmd(x, y, sigma=1.3)
    loops = by_loops(x.tolist(), y.tolist(), 1.3, 1000.0)
    assert got.biased == pytest.approx(loops["biased"], rel=1e-9)
    assert got.unbiased == pytest.approx(loops["unbiased"], rel=1e-9)


def test_cached_float32_arrays_and_tensors_are_measured_in_float64():
    rng = np.random.default_rng(2)
    x = unit_rows(rng, 6, 5).astype(np.float32)  # as the feature cache stores them
    y = unit_rows(rng, 7, 5).astype(np.float32)
    loops = by_loops(x.astype(np.float64).tolist(), y.astype(np.float64).tolist(), 10.0, 1000.0)
    for a, b in ((x, y), (torch.from_numpy(x), torch.from_numpy(y))):
        got = cmmd(a, b)
        assert got.biased == pytest.approx(loops["biased"], rel=1e-9)
        assert got.unbiased == pytest.approx(loops["unbiased"], rel=1e-9)


@pytest.mark.parametrize(("x", "y", "kwargs", "message"), [
    (np.zeros((3, 2)), np.zeros((3, 4)), {}, "dimension"),
    (np.zeros((1, 2)), np.zeros((3, 2)), {}, "at least 2 points"),
    (np.zeros((3, 2)), np.zeros((1, 2)), {}, "at least 2 points"),
    (np.zeros((3, 2)), np.zeros((3, 2)), {"sigma": 0.0}, "sigma"),
    (np.zeros((3, 2)), np.zeros((3, 2)), {"scale": -1.0}, "scale"),
    (np.full((3, 2), np.nan), np.zeros((3, 2)), {}, "NaN"),
])
def test_bad_inputs_are_refused(x, y, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cmmd(x, y, **kwargs)


# --- the CLIP extractor ---------------------------------------------------------------------

FOLDER = "clip-vit-large-patch14-336"  # the folder name the resolver looks for
SIDE, PROJ = 28, 12  # the tiny model's input side and embedding width
# CLIP's normalisation, scenic clip/model.py:74-75 (the reference's `normalize_image`)
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Isolated caches, downloads off: nothing from the home directory is found or written."""
    dirs = {name: tmp_path / name for name in ("explicit", "env", "torch", "cache", "hf")}
    monkeypatch.setenv("TORCH_HOME", str(dirs["torch"]))
    monkeypatch.setenv("ADAPTSCOPE_CACHE", str(dirs["cache"]))
    monkeypatch.setenv("HF_HOME", str(dirs["hf"]))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("ADAPTSCOPE_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("ADAPTSCOPE_OFFLINE", "1")
    monkeypatch.setattr(weights, "_download_dir",
                        lambda *a: pytest.fail("a download was attempted"))
    return dirs


def vision_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=2, image_size=SIDE, patch_size=14,
                            projection_dim=PROJ)


def save_tiny_clip(folder, full: bool = False, seed: int = 0):
    """A random-weight CLIP saved with `save_pretrained`: the image tower alone, or (`full`) a
    whole CLIPModel with a text tower, as the official folder holds."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    if full:
        text = {"hidden_size": 16, "intermediate_size": 20, "num_hidden_layers": 1,
                "num_attention_heads": 2, "vocab_size": 50, "max_position_embeddings": 8,
                "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision_config().to_dict(),
                                     projection_dim=PROJ))
    else:
        model = CLIPVisionModelWithProjection(vision_config())
    model.save_pretrained(folder)
    return model.eval()


def images(n: int = 3, side: int = 40, seed: int = 1) -> torch.Tensor:
    """(n, 3, side, side) floats holding 8-bit values, as extractors receive them."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), generator=g).float()


def expected_embeddings(x: torch.Tensor, folder) -> torch.Tensor:
    """CMMD's embedding written out: PIL bicubic of the 8-bit image to the model's side, / 255,
    CLIP mean/std, the projected image embedding of the model loaded straight from the folder,
    divided by its norm."""
    from transformers import CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection.from_pretrained(folder, local_files_only=True).eval()
    batch = []
    for img in x:
        pil = Image.fromarray(img.to(torch.uint8).permute(1, 2, 0).numpy())
        arr = np.asarray(pil.resize((SIDE, SIDE), resample=Image.BICUBIC), dtype=np.float32)
        batch.append(((arr / 255.0 - MEAN) / STD).transpose(2, 0, 1))
    with torch.no_grad():
        emb = model(pixel_values=torch.from_numpy(np.stack(batch))).image_embeds
    return emb / emb.norm(dim=1, keepdim=True)


def test_clip_extractor_gives_unit_cmmd_embeddings(places, one_thread):
    folder = places["explicit"] / FOLDER
    save_tiny_clip(folder)
    extractor = CLIPExtractor(places["explicit"])
    assert extractor.input_size is None and extractor.side == SIDE
    for side in (40, 20):  # downsampled and upsampled to the model's side
        x = images(side=side)
        out = extractor(x)
        assert out.shape == (3, PROJ) and out.dtype == torch.float32
        torch.testing.assert_close(out.norm(dim=1), torch.ones(3), atol=1e-6, rtol=0)
        torch.testing.assert_close(out, expected_embeddings(x, folder), atol=1e-5, rtol=1e-5)
        assert torch.equal(out, extractor(x))  # deterministic
    again = CLIPExtractor(places["explicit"])
    assert again.name == extractor.name and f"{SIDE}px-{PROJ}d" in extractor.name
    assert torch.equal(again(images()), extractor(images()))


def test_clip_features_go_through_the_feature_cache_and_into_cmmd(places, one_thread):
    save_tiny_clip(places["explicit"] / FOLDER)
    extractor = CLIPExtractor(places["explicit"])
    real = images(4, seed=2).to(torch.uint8)
    feats = real_features(real, extractor)  # the path FID's real statistics take, cached
    assert feats.shape == (4, PROJ)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(real_features(real, extractor), feats)  # from the cache
    fake = extractor(images(5, seed=3)).numpy()
    loops = by_loops(feats.astype(np.float64).tolist(), fake.astype(np.float64).tolist(),
                     10.0, 1000.0)
    assert cmmd(feats, fake).biased == pytest.approx(loops["biased"], rel=1e-9)


def test_the_official_folder_layout_loads_its_image_tower(places, one_thread):
    """openai/clip-vit-large-patch14-336 holds a whole CLIPModel: its image tower and projection
    load, its text tower is left out, and the embedding is CLIPModel's image feature."""
    folder = places["explicit"] / FOLDER
    full = save_tiny_clip(folder, full=True, seed=4)
    extractor = CLIPExtractor(places["explicit"])
    x = images(2, side=SIDE)
    pixels = np.stack([((img.permute(1, 2, 0).numpy() / 255.0).astype(np.float32) - MEAN) / STD
                       for img in x]).transpose(0, 3, 1, 2)  # already at the model's side
    with torch.no_grad():
        ref = full.get_image_features(pixel_values=torch.from_numpy(pixels))
        ref = ref if torch.is_tensor(ref) else ref.pooler_output
    torch.testing.assert_close(extractor(x), ref / ref.norm(dim=1, keepdim=True),
                               atol=1e-5, rtol=1e-5)


def test_a_folder_missing_part_of_the_image_tower_is_refused(places, one_thread):
    from safetensors.torch import load_file, save_file

    folder = places["explicit"] / FOLDER
    save_tiny_clip(folder)
    state = load_file(folder / "model.safetensors")
    del state["visual_projection.weight"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError) as info:
        CLIPExtractor(places["explicit"])
    assert str(folder) in str(info.value) and "visual_projection.weight" in str(info.value)


def put_model_folder(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (folder / "model.safetensors").write_bytes(b"x")
    return folder


def test_model_folder_search_order(places, monkeypatch):
    snapshot = places["hf"] / "hub" / "models--openai--clip-vit-large-patch14-336"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("abc123")
    put_model_folder(snapshot / "snapshots" / "000old")
    hub = put_model_folder(snapshot / "snapshots" / "abc123")
    assert resolve_weights_dir("clip-vit-l14-336") == hub  # the snapshot refs/main names
    cached = put_model_folder(places["cache"] / "weights" / FOLDER)
    assert resolve_weights_dir("clip-vit-l14-336") == cached
    torch_hub = put_model_folder(places["torch"] / "hub" / "checkpoints" / FOLDER)
    assert resolve_weights_dir("clip-vit-l14-336") == torch_hub
    env = put_model_folder(places["env"] / FOLDER)
    monkeypatch.setenv("ADAPTSCOPE_WEIGHTS_DIR", str(places["env"]))
    assert resolve_weights_dir("clip-vit-l14-336") == env
    explicit = put_model_folder(places["explicit"] / FOLDER)
    assert resolve_weights_dir("clip-vit-l14-336", places["explicit"]) == explicit


def test_a_missing_folder_fails_naming_it_the_places_and_the_fix(places):
    incomplete = places["explicit"] / FOLDER
    incomplete.mkdir(parents=True)
    (incomplete / "config.json").write_text("{}")  # no weights: skipped, and named
    with pytest.raises(WeightsNotFound) as info:
        CLIPExtractor(places["explicit"])
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert f"'{FOLDER}'" in msg and "config.json" in msg and "pytorch_model.bin" in msg
    assert "ADAPTSCOPE_OFFLINE" in msg  # why nothing was fetched
    for place in (places["explicit"], places["torch"] / "hub" / "checkpoints",
                  places["cache"] / "weights", places["hf"] / "hub"):
        assert str(place) in msg
    assert f"without config.json and a weight file: {incomplete}" in msg
    assert "hf download openai/clip-vit-large-patch14-336" in msg
    assert str(places["cache"] / "weights" / FOLDER) in msg  # where to put it
    assert not (places["cache"] / "weights").exists()  # nothing written


def test_a_download_goes_to_the_adaptscope_cache_only_when_allowed(places, monkeypatch):
    calls = []

    def fake_download(spec, dest):
        calls.append((spec.repo_id, dest))
        put_model_folder(dest)

    monkeypatch.setattr(weights, "_download_dir", fake_download)
    with pytest.raises(WeightsNotFound, match="ADAPTSCOPE_OFFLINE"):
        resolve_weights_dir("clip-vit-l14-336")  # set by the fixture
    monkeypatch.delenv("ADAPTSCOPE_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFound, match="HF_HUB_OFFLINE"):
        resolve_weights_dir("clip-vit-l14-336")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(WeightsNotFound, match="disabled for this call"):
        resolve_weights_dir("clip-vit-l14-336", download=False)
    assert calls == []
    path = resolve_weights_dir("clip-vit-l14-336")
    assert path == places["cache"] / "weights" / FOLDER
    assert calls == [("openai/clip-vit-large-patch14-336", path)]
    assert resolve_weights_dir("clip-vit-l14-336") == path and len(calls) == 1  # found now
