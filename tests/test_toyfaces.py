"""ToyFaces renderer: purity, attribute statistics, what each domain changes, and file output."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from adaptscope.cli import app
from adaptscope.embedded import _raster
from adaptscope.embedded import toyfaces as tf


@pytest.mark.parametrize("domain", tf.DOMAINS)
def test_render_is_a_pure_function_of_domain_index_and_size(domain):
    idx = np.array([5, 17, 1_000_003, 42])
    a = tf.render(domain, idx, 32)
    b = tf.render(domain, idx, 32)
    assert a.shape == (4, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    # the same image whatever batch it is rendered in (batch-wide bounds must not leak in)
    alone = tf.render(domain, [17], 32)[0]
    other_batch = tf.render(domain, [900, 17, 3, 2_000_000], 32)[1]
    np.testing.assert_array_equal(a[1], alone)
    np.testing.assert_array_equal(a[1], other_batch)
    assert not np.array_equal(a[0], a[1])


def test_batches_larger_than_a_chunk_match_single_renders():
    idx = np.arange(1_000_000, 1_000_000 + 70)
    batch = tf.render("source", idx, 16)
    np.testing.assert_array_equal(batch[66], tf.render("source", idx[66:67], 16)[0])


def test_render_tensor_range_and_layout():
    x = tf.render_tensor("babies", [1, 2, 3], 64)
    assert tuple(x.shape) == (3, 3, 64, 64) and str(x.dtype) == "torch.float32"
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.max() > 0.9
    img = tf.render("babies", [2], 64)[0]
    np.testing.assert_allclose(x[1].permute(1, 2, 0).numpy(), img / 127.5 - 1.0, atol=1e-6)


def test_attribute_api_shape_and_identity_shared_across_domains():
    assert len(tf.ATTRIBUTES) >= 8
    assert all(2 <= a.levels <= 5 for a in tf.ATTRIBUTES)
    idx = np.arange(50)
    attrs = tf.attributes("source", idx)
    assert attrs.shape == (50, len(tf.ATTRIBUTES)) and attrs.dtype == np.int64
    for domain in tf.TARGET_DOMAINS:
        np.testing.assert_array_equal(tf.attributes(domain, idx), attrs)


def test_attributes_are_uniform_and_pairwise_uncorrelated():
    attrs = tf.attributes("source", np.arange(1_000_000, 1_010_000))
    for k, attr in enumerate(tf.ATTRIBUTES):
        counts = np.bincount(attrs[:, k], minlength=attr.levels)
        assert counts.size == attr.levels
        assert np.abs(counts / len(attrs) - 1 / attr.levels).max() < 0.02, attr.name
    corr = np.corrcoef(attrs.T.astype(float))
    off = corr[~np.eye(len(tf.ATTRIBUTES), dtype=bool)]
    assert np.abs(off).max() < 0.05


def test_sunglasses_change_only_the_eye_region():
    idx = np.arange(0, 40)
    for size in (32, 64):
        src = tf.render("source", idx, size).astype(int)
        sun = tf.render("sunglasses", idx, size).astype(int)
        boxes = tf.eye_region(idx, size)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            diff = np.abs(src[i] - sun[i]).sum(axis=2)
            inside = np.zeros_like(diff, dtype=bool)
            inside[y0:y1, x0:x1] = True
            assert diff[~inside].max() == 0
            assert diff[inside].mean() > 20  # the lenses really are there
            # dark glasses: the box gets darker
            assert sun[i][inside].mean() < src[i][inside].mean()


def test_babies_have_baby_proportions():
    idx = np.arange(100_000, 100_200)
    src = tf._geometry("source", idx)
    baby = tf._geometry("babies", idx)
    assert np.all(np.abs(baby.b / baby.a - 1) <= np.abs(src.b / src.a - 1) + 1e-6)  # rounder
    assert np.all(baby.a > src.a)  # larger face
    assert np.all(baby.eye_ry / baby.a > src.eye_ry / src.a)  # bigger eyes
    assert np.all(baby.mouth_w / baby.a < src.mouth_w / src.a)  # smaller mouth
    # and it shows in pixels: more eye-white area in the same identities
    def eye_white(img):
        return (np.abs(img.astype(int) - [242, 242, 238]).sum(axis=3) < 12).sum(axis=(1, 2))

    assert eye_white(tf.render("babies", idx, 64)).mean() > 1.5 * eye_white(
        tf.render("source", idx, 64)
    ).mean()


def test_baby_hair_is_sparser_than_adult_hair():
    idx = np.arange(100_000, 100_300)
    attrs = tf.attributes("babies", idx)
    long_hair = idx[attrs[:, tf._COL["hair_style"]] == 2]
    canvas_src = _raster.LabelCanvas(len(long_hair), 32, 2)
    tf._draw("source", tf._geometry("source", long_hair), canvas_src)
    canvas_baby = _raster.LabelCanvas(len(long_hair), 32, 2)
    tf._draw("babies", tf._geometry("babies", long_hair), canvas_baby)
    hair = (tf.HAIR, tf.HAIR_BACK)
    assert np.isin(canvas_baby.labels, hair).mean() < 0.5 * np.isin(canvas_src.labels, hair).mean()


def test_sketches_are_grey_lines_on_white():
    idx = np.arange(200_000, 200_030)
    sk = tf.render("sketches", idx, 64).astype(int)
    assert np.array_equal(sk[..., 0], sk[..., 1]) and np.array_equal(sk[..., 1], sk[..., 2])
    per_image_median = np.median(sk[..., 0].reshape(len(idx), -1), axis=1)
    assert per_image_median.min() > 235  # white paper
    dark = (sk[..., 0] < 150).mean(axis=(1, 2))
    assert dark.min() > 0.02 and dark.max() < 0.4  # there are lines, and only lines
    src = tf.render("source", idx, 64).astype(int)
    assert np.abs(src[..., 0] - src[..., 2]).mean() > 10  # the source is colourful


def test_full_sets_and_source_range_are_disjoint():
    assert {d: len(r) for d, r in tf.FULL_SET.items()} == {
        "sunglasses": 2500,
        "babies": 2500,
        "sketches": 300,
    }
    ranges = [*tf.FULL_SET.values(), tf.SOURCE_RANGE]
    for i, r1 in enumerate(ranges):
        for r2 in ranges[i + 1 :]:
            assert r1.stop <= r2.start or r2.stop <= r1.start


def test_few_shot_indices_are_seeded_distinct_members_of_the_full_set():
    a = tf.few_shot_indices("babies", 10, seed=0)
    assert len(set(a.tolist())) == 10
    assert all(i in tf.FULL_SET["babies"] for i in a)
    np.testing.assert_array_equal(a, tf.few_shot_indices("babies", 10, seed=0))
    assert not np.array_equal(a, tf.few_shot_indices("babies", 10, seed=1))
    with pytest.raises(ValueError, match="shots"):
        tf.few_shot_indices("sketches", 301)
    with pytest.raises(ValueError, match="unknown ToyFaces domain"):
        tf.render("cats", [0], 32)


def test_observable_masks_follow_the_domain():
    names = [a.name for a in tf.ATTRIBUTES]
    assert tf.observable("source").all()
    assert not tf.observable("sunglasses")[names.index("eye_size")]
    sk = tf.observable("sketches")
    assert not sk[names.index("skin_tone")] and sk[names.index("hair_style")]


def test_write_domain_writes_pngs_and_attribute_table(tmp_path):
    out = tf.write_domain("sunglasses", 6, 32, tmp_path / "sun", start=10)
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 6
    with open(out / "attributes.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["file", *tf.ATTRIBUTE_NAMES]
    assert [r[0] for r in rows[1:]] == [p.name for p in pngs]
    expected = tf.attributes("sunglasses", np.arange(10, 16))
    np.testing.assert_array_equal(np.array(rows[1:])[:, 1:].astype(int), expected)
    png = np.asarray(Image.open(pngs[2]))
    np.testing.assert_array_equal(png, tf.render("sunglasses", [12], 32)[0])


def test_cli_data_toyfaces(tmp_path):
    result = CliRunner().invoke(
        app, ["data", "toyfaces", "--domain", "sketches", "--count", "3", "--size", "16",
              "--out", str(tmp_path / "sk")]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 3 sketches" in result.output
    assert len(list((tmp_path / "sk").glob("sketches_02000*.png"))) == 3
    bad = CliRunner().invoke(app, ["data", "toyfaces", "--domain", "cats", "--count", "1",
                                   "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and not (tmp_path / "x").exists()
