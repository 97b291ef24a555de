"""Damaged or hostile inputs are refused or skipped with a line naming the file, never a traceback.

Checkpoints whose recorded network configuration is wrong or absurd, pickles that would run code,
damaged sample arrays in run folders, names that matplotlib would read as mathtext, a report that
fails midway, and corrupt images in folders and zips.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import matplotlib
from _cli_checks import one_error

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from _tiny_world import make_source_checkpoint  # noqa: E402
from _trajectory_fixtures import make_runs  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import adaptscope.models.checkpoint as checkpoint_module  # noqa: E402
import adaptscope.viz.report as report_module  # noqa: E402
from adaptscope import load_trajectories  # noqa: E402
from adaptscope.cli import app  # noqa: E402
from adaptscope.data.folder import load_images  # noqa: E402
from adaptscope.errors import CheckpointError, DataError  # noqa: E402
from adaptscope.track import rundir  # noqa: E402
from adaptscope.viz import (  # noqa: E402
    FigureSkipped,
    make_figures,
    plot_sample_evolution,
    write_report,
)
from adaptscope.viz.figures import FIGURES  # noqa: E402
from adaptscope.viz.samples import DamagedFile  # noqa: E402

cli = CliRunner(env={"COLUMNS": "400"})
SMALL = {"size": 8, "n_samples": 2}


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("ADAPTSCOPE_DEBUG", raising=False)




# --- 1. a checkpoint's recorded network configuration ----------------------------------------


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    return make_source_checkpoint(tmp_path_factory.mktemp("ck") / "good.pt")


def with_config(good: Path, path: Path, key: str, value) -> Path:
    """A copy of `good` whose `key` ('g_config' or 'd_config') is changed by `value` (a dict of
    changes, or anything else to replace the whole entry)."""
    obj = torch.load(good, weights_only=True)
    obj[key] = {**obj[key], **value} if isinstance(value, dict) else value
    torch.save(obj, path)
    return path


@pytest.fixture
def no_building(monkeypatch):
    """Building a network from a checkpoint fails the test."""

    def never(*args, **kwargs):
        raise AssertionError("a network was built from a refused configuration")

    monkeypatch.setattr(checkpoint_module, "Generator", never)
    monkeypatch.setattr(checkpoint_module, "Discriminator", never)


BAD_CONFIGS = [
    ("g_config", {"colour": 1}, "colour"),
    ("g_config", {"size": "16"}, "size"),
    ("g_config", {"size": 2**20}, "size"),
    ("g_config", {"size": 24}, "size"),
    ("g_config", {"size": -16}, "size"),
    ("g_config", {"size": True}, "size"),
    ("g_config", {"style_dim": -1}, "style_dim"),
    ("g_config", {"n_mlp": 10**9}, "n_mlp"),
    ("g_config", {"lr_mlp": float("nan")}, "lr_mlp"),
    ("g_config", {"channel_multiplier": 10**6, "channels": None}, "channel_multiplier"),
    ("g_config", {"size": 2048, "channels": None}, "size"),
    ("g_config", {"channels": {4: 16, 8: 10**7, 16: 16}}, "channels"),
    ("g_config", {"channels": {4: 16, 8: -3, 16: 16}}, "channels"),
    ("g_config", {"channels": {4: 16, 16: 16}}, "channels"),
    ("g_config", {"channels": [16, 16, 16]}, "channels"),
    ("g_config", ["not", "a", "dict"], "g_config"),
    ("d_config", {"size": 2**20}, "size"),
    ("d_config", {"blur": 1}, "blur"),
    ("d_config", {"channel_multiplier": 0, "channels": None}, "channel_multiplier"),
]


@pytest.mark.parametrize(("key", "value", "named"), BAD_CONFIGS,
                         ids=[f"{k}-{n}-{i}" for i, (k, _, n) in enumerate(BAD_CONFIGS)])
def test_a_bad_network_config_is_refused_before_building(key, value, named, good_checkpoint,
                                                         tmp_path, no_building):
    path = with_config(good_checkpoint, tmp_path / "bad.pt", key, value)
    with pytest.raises(CheckpointError) as err:
        checkpoint_module.load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and named in message and key in message
    assert "\n" not in message


def test_a_config_that_disagrees_with_the_tensors_is_refused(good_checkpoint, tmp_path,
                                                             no_building):
    path = with_config(good_checkpoint, tmp_path / "bad.pt", "g_config",
                       {"size": 1024, "channels": None})
    with pytest.raises(CheckpointError, match=r"g_config\['size'\] = 1024.*16 px"):
        checkpoint_module.load_checkpoint(path)


def test_the_cli_names_the_file_and_the_key(good_checkpoint, tmp_path):
    bad = with_config(good_checkpoint, tmp_path / "bad.pt", "g_config", {"size": 2**20})
    result = cli.invoke(app, ["run", "--set", f"source.checkpoint={bad}",
                              "--out", str(tmp_path / "o")])
    message = one_error(result)
    assert str(bad) in message and "g_config['size']" in message
    assert not (tmp_path / "o").exists()


# --- 6. a pickle that would run code ---------------------------------------------------------


class _System:
    def __reduce__(self):
        return (os.system, ("echo executed",))


class _Print:
    def __reduce__(self):
        return (print, ("executed",))


@pytest.mark.parametrize(("payload", "named"), [(_System(), "system"), (_Print(), "print")])
def test_a_pickle_that_runs_code_is_refused_without_advice_to_allow_it(payload, named, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": payload}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError) as err:
        checkpoint_module.load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and named in message  # the global refused
    assert "weights_only=False" not in message and "will likely succeed" not in message
    assert "weights_only` set to `False" not in message and "add_safe_globals" not in message
    result = cli.invoke(app, ["run", "--set", f"source.checkpoint={path}",
                              "--out", str(tmp_path / "o")])
    assert "will likely succeed" not in one_error(result)


@pytest.mark.parametrize(("payload", "named"), [(_System(), "system"), (_Print(), "print")])
def test_every_weights_file_is_refused_without_that_advice(payload, named, tmp_path):
    """Metric backbones, the toy network and realism classifiers load through the same reader."""
    from adaptscope.errors import WeightsError
    from adaptscope.files import load_weights_only

    path = tmp_path / "evil.pth"
    torch.save({"weight": payload}, path, pickle_module=pickle)
    with pytest.raises(WeightsError) as err:
        load_weights_only(path)
    message = str(err.value)
    assert str(path) in message and named in message
    assert "weights_only" not in message and "will likely succeed" not in message


# --- 2. damaged sample arrays in run folders -------------------------------------------------


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).bytes(500))
    elif how == "empty":
        path.write_bytes(b"")
    else:  # a pickled object array
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


def _damaged_runs(root: Path, which: str, how: str) -> tuple[Path, Path]:
    """Two runs, one with a damaged sample grid or shots array (the only shots left)."""
    runs = make_runs(root, ("tgan", "cdc"), (0,), **SMALL)
    run_dir = runs / "ffhq-babies-cdc-s0"
    damaged = run_dir / (rundir.sample_file(1000, "npy") if which == "samples"
                         else rundir.SHOTS_NPY)
    _damage(damaged, how)
    if which == "shots":  # the other run's shots would stand in for them
        (runs / "ffhq-babies-tgan-s0" / rundir.SHOTS_NPY).unlink()
    return runs, damaged


@pytest.mark.parametrize("how", ["truncated", "random", "empty", "pickled"])
@pytest.mark.parametrize("which", ["samples", "shots"])
def test_a_damaged_sample_array_is_left_out_with_a_warning(which, how, tmp_path):
    runs, damaged = _damaged_runs(tmp_path, which, how)
    with pytest.warns(DamagedFile) as caught:
        fig = plot_sample_evolution(load_trajectories(runs))
    assert [str(w.message).startswith(f"{damaged} ") for w in caught] == [True]
    grids = [ax for ax in fig.axes if ax.get_images()]
    assert len(grids) == 1 + 2 * 7 - 1  # shots and 2 methods x 7 evaluations, less the damaged


@pytest.mark.parametrize("which", ["samples", "shots"])
def test_plot_and_report_skip_a_damaged_sample_array(which, tmp_path):
    runs, damaged = _damaged_runs(tmp_path / "runs", which, "pickled")
    for command, out in (("plot", tmp_path / "figs"), ("report", tmp_path / "report")):
        result = cli.invoke(app, [command, str(runs), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
        assert len(warnings) == 1 and str(damaged) in warnings[0], result.stderr
        figures = out if command == "plot" else out / "figures"
        for name in ("realism", "diversity", "samples"):
            assert (figures / f"{name}.png").is_file(), name
    assert str(damaged) in (tmp_path / "report" / "index.html").read_text()


# --- 3. names matplotlib would read as mathtext ----------------------------------------------

TARGET = "a$\\frac$b"
METHOD = "m$x^$"


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


def test_names_with_dollar_signs_are_drawn_as_text(tmp_path):
    runs = make_runs(tmp_path / "runs", ("tgan", METHOD), (0, 1), target=TARGET, **SMALL)
    df = load_trajectories(runs)
    drawn = 0
    for name, draw in FIGURES.items():
        try:
            fig = draw(df)
        except FigureSkipped:  # precision and recall are not recorded here
            continue
        drawn += 1
        fig.savefig(io.BytesIO(), format="png")  # before: mathtext ValueError while drawing
        texts = _texts(fig)
        assert any(TARGET in t for t in texts), name
        assert any(t == METHOD for t in texts), name  # the legend entry or the row label
    assert drawn == len(FIGURES) - 1


def test_the_realism_classifier_label_still_reads_as_p_t(tmp_path):
    df = load_trajectories(make_runs(tmp_path / "runs", ("tgan",), (0,), **SMALL))
    fig = FIGURES["realism"](df)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert any("realism classifier p" in label and "$" not in label for label in labels)


# --- 4. a report replaced whole or not at all ------------------------------------------------


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()}


def _fail(*args, **kwargs):
    raise RuntimeError("simulated failure")


@pytest.mark.parametrize("where", ["figure", "summary"])
def test_a_report_failing_midway_leaves_the_previous_one_intact(where, tmp_path, monkeypatch):
    for name in ("precision_recall", "replication", "samples"):  # fewer figures, sooner done
        monkeypatch.delitem(FIGURES, name)
    first = make_runs(tmp_path / "first", ("tgan", "cdc"), (0,), **SMALL)
    out = tmp_path / "report"
    write_report(first, out)
    (out / "notes.txt").write_text("mine")
    before = _files(out)
    assert {"index.html", "summary.csv", "figures/realism.png"} <= set(before)
    second = make_runs(tmp_path / "second", ("tgan", "cdc", "dcl"), (0,), **SMALL)
    with pytest.MonkeyPatch.context() as patch:
        if where == "figure":  # drawn after realism and diversity
            patch.setitem(FIGURES, "quality_diversity", _fail)
        else:
            patch.setattr(report_module, "summarize", _fail)
        with pytest.raises(RuntimeError, match="simulated failure"):
            write_report(second, out)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "report", "second"]
    write_report(second, out)  # and a report that succeeds replaces it
    after = _files(out)
    assert after["notes.txt"] == b"mine" and after["summary.csv"] != before["summary.csv"]
    assert after["figures/realism.png"] != before["figures/realism.png"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_plot_failing_midway_leaves_the_previous_figures(tmp_path, monkeypatch):
    out = tmp_path / "figs"
    make_figures(load_trajectories(make_runs(tmp_path / "a", ("tgan",), (0,), **SMALL)), out)
    before = _files(out)
    monkeypatch.setitem(FIGURES, "replication", _fail)
    df = load_trajectories(make_runs(tmp_path / "b", ("tgan", "cdc"), (0,), **SMALL))
    with pytest.raises(RuntimeError, match="simulated failure"):
        make_figures(df, out)
    assert _files(out) == before


# --- 5. corrupt images name their file -------------------------------------------------------


def _images(folder: Path, n: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.new("RGB", (12, 12), (40 * k, 90, 200)).save(folder / f"img{k}.png")


def test_a_corrupt_image_in_a_folder_is_named_by_its_path(tmp_path):
    root = tmp_path / "data" / "imgs"
    _images(root)
    (root / "img3.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError) as err:
        load_images(root, 8)
    message = str(err.value)
    assert str(root / "img3.png") in message and "BytesIO" not in message
    assert " at 0x" not in message


@pytest.mark.parametrize("damage", ["garbage", "bad-deflate"])
def test_a_corrupt_image_in_a_zip_is_named_zip_colon_member(damage, tmp_path):
    _images(tmp_path / "imgs")
    archive = tmp_path / "data" / "x.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for k in range(3):
            zf.write(tmp_path / "imgs" / f"img{k}.png", f"img{k}.png")
        zf.writestr("img3.png", b"not a png at all" if damage == "garbage" else bytes(2000))
    if damage == "bad-deflate":  # scramble the compressed stream of img3.png
        with zipfile.ZipFile(archive) as zf:
            info = zf.getinfo("img3.png")
        data = bytearray(archive.read_bytes())
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        data[start:start + info.compress_size] = bytes([0xFF]) * info.compress_size
        archive.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        load_images(archive, 8)
    message = str(err.value)
    assert f"{archive}:img3.png" in message and "BytesIO" not in message
    assert " at 0x" not in message
