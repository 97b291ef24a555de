"""Source-generator quality evidence: grids, FID against its noise floor, attribute distances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from adaptscope.embedded import quality, toyfaces
from adaptscope.embedded import toynet as tn
from adaptscope.embedded import toynet_training as tt
from adaptscope.models import Generator

N_ATTR = len(toyfaces.ATTRIBUTES)


@pytest.fixture(scope="module")
def generator() -> Generator:
    torch.manual_seed(0)
    return Generator(16, 32, 2, channels={4: 16, 8: 16, 16: 16}).eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A stand-in ToyNet from a few training steps, and the metadata saved with it."""
    path = tmp_path_factory.mktemp("toynet") / "toynet.pt"
    tt.train_toynet(steps=2, batch=8, seed=0, size=16, out=path, eval_per_domain=4,
                    log=lambda _: None)
    return tn.load_toynet(path), tn.read_toynet_meta(path)


def test_samples_are_seeded_uint8(generator):
    a = quality.sample_images(generator, 5, seed=3, batch_size=2)
    assert a.shape == (5, 16, 16, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, quality.sample_images(generator, 5, seed=3))
    np.testing.assert_array_equal(a[:2], quality.sample_images(generator, 2, seed=3))
    assert not np.array_equal(a, quality.sample_images(generator, 5, seed=4))


def test_real_indices_are_disjoint_and_in_the_source_range():
    a, b = quality.real_indices(50, seed=1, sets=2)
    assert len(a) == len(b) == 50
    assert not set(a.tolist()) & set(b.tolist())
    r = toyfaces.SOURCE_RANGE
    assert all(r.start <= i < r.stop for i in np.concatenate([a, b]))
    np.testing.assert_array_equal(a, quality.real_indices(50, seed=1)[0])
    np.testing.assert_array_equal(a[:20], quality.real_indices(20, seed=1)[0])


def test_sample_grid_writes_both_images(generator, tmp_path):
    paths = quality.sample_grid(generator, tmp_path / "out", n=6, seed=0, scale=3, ncol=3)
    sizes = {k: Image.open(p).size for k, p in paths.items()}
    # 3 columns x 2 rows of 16 px tiles with 2 px padding, enlarged 3 times.
    assert sizes == {"samples": (3 * 56, 3 * 38), "real": (3 * 56, 3 * 38)}


def test_noise_floor_is_below_a_random_generator(generator, trained):
    res = quality.fid_vs_noise_floor(generator, n=96, seed=0, net=trained[0], sizes=(48,))
    assert res["n"] == 96 and res["backbone"].startswith("toy/")
    assert [row["n"] for row in res["by_size"]] == [48, 96]
    assert res["fid_generated"] == res["by_size"][-1]["fid_generated"]
    assert 0 <= res["fid_noise_floor"] < res["fid_generated"]
    for row in res["by_size"]:
        assert row["fid_noise_floor"] < row["fid_generated"]


def test_attribute_tv_bounds_and_identity():
    truth = toyfaces.attributes("source", quality.real_indices(200, seed=0)[0])
    np.testing.assert_array_equal(quality.attribute_tv(truth, truth), np.zeros(N_ATTR))
    shifted = truth.copy()
    shifted[:, 0] = 0
    other = truth.copy()
    other[:, 0] = 1
    tv = quality.attribute_tv(shifted, other)
    assert tv[0] == 1.0 and np.all(tv[1:] == 0)
    with pytest.raises(ValueError, match="attribute tables"):
        quality.attribute_tv(truth[:, :3], truth)
    with pytest.raises(ValueError, match="levels must lie"):
        quality.level_histogram(np.array([0, 3]), 3)


def test_attribute_distances_table(generator, trained):
    df = quality.attribute_distances(generator, n=64, seed=0, net=trained[0])
    assert list(df.columns) == [
        "attribute", "levels", "tv_generated_vs_real", "tv_predicted_real_vs_truth",
        "tv_generated_vs_predicted_real", "tv_real_vs_real",
    ]
    assert df["attribute"].tolist() == list(toyfaces.ATTRIBUTE_NAMES)
    assert df["levels"].tolist() == [a.levels for a in toyfaces.ATTRIBUTES]
    tv = df.drop(columns=["attribute", "levels"]).to_numpy()
    assert np.all((tv >= 0) & (tv <= 1))
    # Two disjoint real draws differ only by sampling noise; an untrained net collapses levels.
    assert df["tv_real_vs_real"].max() < 0.35
    assert df["tv_predicted_real_vs_truth"].mean() > df["tv_real_vs_real"].mean()


def test_toynet_accuracy_table(trained):
    table = quality.toynet_accuracy_table(trained[1])
    assert table["head"].tolist() == ["domain", *toyfaces.ATTRIBUTE_NAMES]
    assert list(table.columns) == ["head", "all", *toyfaces.DOMAINS]
    values = table.drop(columns="head").to_numpy(dtype=float)
    seen = values[~np.isnan(values)]
    assert np.all((seen >= 0) & (seen <= 1))
    row = table.set_index("head").loc["skin_tone"]
    assert np.isnan(row["sketches"]) and not np.isnan(row["source"])
    with pytest.raises(ValueError, match="heldout_accuracy"):
        quality.toynet_accuracy_table({})


def test_report_script_writes_the_folder(generator, trained, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from adaptscope.models import save_checkpoint

    script = Path(__file__).resolve().parents[1] / "experiments" / "embedded_world_report.py"
    spec = importlib.util.spec_from_file_location("embedded_world_report", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ckpt, net_path, out = tmp_path / "g.pt", tmp_path / "net.pt", tmp_path / "report"
    save_checkpoint(ckpt, g_ema=generator, step=7)
    tn.save_toynet(trained[0], net_path, trained[1])
    module.main(["--checkpoint", str(ckpt), "--out", str(out), "--n", "40",
                 "--toynet", str(net_path)])
    assert {p.name for p in out.iterdir()} == {"README.md", "samples.png", "real.png",
                                                "quality.json"}
    text = (out / "README.md").read_text()
    assert "training step **7**" in text
    shipped = "adaptscope/embedded/assets/toy_source.pt"
    assert f"--checkpoint {shipped} --out reports/embedded-world" in text
    assert f"--checkpoint {ckpt} --out {out} --n 40" in text
    assert "| face_shape | 3 |" in text and "| domain |" in text
    assert "step 7" in capsys.readouterr().out
