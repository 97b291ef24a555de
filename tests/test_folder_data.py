"""Image-folder datasets: loading, conversion, deterministic shots, and every input error."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from adaptscope.data.folder import few_shot_subset, list_images, load_images
from adaptscope.errors import DataError
from adaptscope.track.target import load_target


def _solid(path, colour, size=(20, 20), mode="RGB", fmt=None):
    Image.new(mode, size, colour).save(path, format=fmt)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    for k in range(12):
        _solid(root / f"img_{k:02d}.png", (20 * k, 100, 200 - 10 * k))
    _solid(root / "sub" / "photo.jpg", (250, 10, 10), size=(30, 20))
    _solid(root / "sub" / "w.webp", (10, 250, 10))
    (root / "notes.txt").write_text("not an image")
    _solid(root / ".hidden.png", (0, 0, 0))
    return root


def test_list_images_is_sorted_recursive_and_filtered(folder):
    names = list_images(folder)
    assert len(names) == 14
    assert names == sorted(names)
    assert "sub/photo.jpg" in names and "sub/w.webp" in names
    assert "notes.txt" not in names and ".hidden.png" not in names


def test_load_images_shape_range_and_values(folder):
    x = load_images(folder, 16, files=["img_03.png", "sub/photo.jpg"])
    assert tuple(x.shape) == (2, 3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    expected = torch.tensor([60, 100, 170]) / 127.5 - 1
    torch.testing.assert_close(x[0, :, 8, 8], expected, atol=1e-5, rtol=0)
    assert x[1, 0].mean() > 0.9 and x[1, 1].mean() < -0.8  # JPEG red survives, roughly


def test_resize_shorter_side_then_centre_crop(tmp_path):
    root = tmp_path / "wide"
    root.mkdir()
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # left third red, centre green, right third blue
    arr[:, 20:40] = (0, 255, 0)
    arr[:, 40:] = (0, 0, 255)
    Image.fromarray(arr).save(root / "wide.png")
    x = load_images(root, 10)
    assert tuple(x.shape) == (1, 3, 10, 10)
    centre = x[0, :, 5, 5]
    assert centre[1] > 0.9 and centre[0] < -0.9 and centre[2] < -0.9


def test_rgba_and_grayscale_become_rgb(tmp_path):
    root = tmp_path / "modes"
    root.mkdir()
    _solid(root / "a_gray.png", 77, mode="L")
    _solid(root / "b_transparent.png", (10, 20, 30, 0), mode="RGBA")
    _solid(root / "c_opaque.png", (10, 20, 30, 255), mode="RGBA")
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(root / "d_16bit.png")
    x = load_images(root, 8)
    assert tuple(x.shape) == (4, 3, 8, 8)
    grey = x[0, :, 4, 4]
    assert torch.allclose(grey, torch.full((3,), 77 / 127.5 - 1), atol=1e-5)
    assert torch.allclose(x[1], torch.ones_like(x[1]))  # fully transparent -> white
    torch.testing.assert_close(x[2, :, 0, 0], torch.tensor([10, 20, 30]) / 127.5 - 1)
    assert torch.allclose(x[3, 0], x[3, 1]) and abs(x[3, 0, 0, 0].item() - (155 / 127.5 - 1)) < 0.01


def test_zip_archives_load_like_folders(folder, tmp_path):
    archive = tmp_path / "imgs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in list_images(folder):
            zf.write(folder / name, name)
        zf.writestr("__MACOSX/._img_00.png", b"junk")
    assert list_images(archive) == list_images(folder)
    torch.testing.assert_close(load_images(archive, 8), load_images(folder, 8))


def test_few_shot_subset_is_deterministic(folder):
    a = few_shot_subset(folder, 5, seed=3)
    assert len(set(a)) == 5 and set(a) <= set(list_images(folder))
    assert a == few_shot_subset(folder, 5, seed=3)
    assert a != few_shot_subset(folder, 5, seed=4)
    explicit = ["img_01.png", "sub/w.webp"]
    assert few_shot_subset(folder, 2, files=explicit) == explicit


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        load_images(tmp_path / "nope", 8)
    assert "nope" in str(err.value) and "PNG" in str(err.value)
    assert issubclass(DataError, ValueError)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(DataError, match="no images found in .*empty"):
        list_images(tmp_path / "empty")


def test_truncated_image_is_named_not_skipped(folder):
    big = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(big).save(folder / "img_05.png")
    data = (folder / "img_05.png").read_bytes()
    (folder / "img_05.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="img_05.png") as err:
        load_images(folder, 8)
    assert "re-export" in str(err.value)


def test_garbage_file_with_image_suffix(folder):
    (folder / "img_99.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match="img_99.jpg"):
        load_images(folder, 8)


def test_fewer_images_than_shots(folder):
    with pytest.raises(DataError, match="holds 14 images, fewer than shots=20"):
        few_shot_subset(folder, 20)


def test_explicit_file_not_in_folder(folder):
    with pytest.raises(DataError, match="'missing.png' is not in"):
        load_images(folder, 8, files=["img_00.png", "missing.png"])
    with pytest.raises(DataError, match="is not in"):
        few_shot_subset(folder, 1, files=["../escape.png"])
    with pytest.raises(DataError, match="exactly as many files as shots"):
        few_shot_subset(folder, 3, files=["img_00.png"])


def test_load_target_folder_and_toyfaces(folder):
    target = load_target(str(folder), 8, shots=3, seed=1)
    full, shots, desc, domain = target.full, target.shots, target.description, target.domain
    assert domain is None and target.validation is None
    assert full.shape == (14, 3, 8, 8) and shots.shape == (3, 3, 8, 8)
    # shots are members of the full set
    for s in shots:
        assert any(torch.equal(s, f) for f in full)
    assert str(folder) in desc

    target = load_target("toyfaces:sketches", 16, shots=10, seed=0)
    full, shots, desc, domain = target.full, target.shots, target.description, target.domain
    indices = target.shot_indices
    assert full.shape == (300, 3, 16, 16) and shots.shape == (10, 3, 16, 16)
    assert domain == "sketches" and len(indices) == 10
    assert "sketches" in desc
    with pytest.raises(DataError, match="not a ToyFaces target"):
        load_target("toyfaces:source", 16)


def test_one_lister_for_training_data_and_fid_folders(tmp_path):
    """A .bmp (or .tif) target is read by the data loader and by FID's folder mode alike."""
    from adaptscope.metrics.fid_stats import list_images as fid_list_images

    root = tmp_path / "bmp"
    root.mkdir()
    for k, suffix in enumerate([".bmp", ".tif", ".png"]):
        Image.new("RGB", (8, 8), (40 * k, 0, 0)).save(root / f"img_{k}{suffix}")
    names = list_images(root)
    assert names == ["img_0.bmp", "img_1.tif", "img_2.png"]
    assert [p.name for p in fid_list_images(root)] == names
    assert load_images(root, 8).shape == (3, 3, 8, 8)
