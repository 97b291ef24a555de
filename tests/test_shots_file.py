"""`target.shots_file`: the shots named by a text file of image names, checked before any write.

The shots are exactly the listed images in the listed order (blank lines and `#` comments
ignored); a missing, empty or mismatched list, a name not in the target set, or a list used where
it cannot apply fails with one error naming the file or the setting; without a list the seeded
draw is what it always was; and the preflight refuses a missing list before any run folder.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from adaptscope.cli import app
from adaptscope.config import read_toml
from adaptscope.data.folder import few_shot_subset, load_images
from adaptscope.errors import EXIT_BAD_INPUT, ConfigError, DataError
from adaptscope.images import from_uint8
from adaptscope.spec import MetricsSpec, TargetSpec
from adaptscope.track.store import read_metadata
from adaptscope.track.target import load_target
from adaptscope.train import preflight
from adaptscope.train.experiment import load_experiment

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SIZE = 16
cli = CliRunner(env={"COLUMNS": "400"})


def write_pngs(folder: Path, n: int) -> dict[str, np.ndarray]:
    """`n` distinct random SIZE px PNGs in `folder`; their pixels by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = {}
    for i in range(n):
        name = f"img{i:03d}.png"
        pixels[name] = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels[name]).save(folder / name)
    return pixels


@pytest.fixture
def target(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path / "target"
    return folder, write_pngs(folder, 12)


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    return from_uint8(pixels[None])[0]


# --- the listed shots, in the listed order -----------------------------------------------------

LISTED = ["img007.png", "img002.png", "img011.png"]
LIST_TEXT = ("# the 3-shot set\n\nimg007.png\n  img002.png  \n# img004.png is left out\n"
             "\nimg011.png\n")


@pytest.mark.parametrize("as_zip", [False, True])
def test_the_shots_are_the_listed_files_in_order(target, tmp_path, as_zip):
    folder, pixels = target
    data = folder
    if as_zip:
        data = tmp_path / "target.zip"
        with zipfile.ZipFile(data, "w") as zf:
            for name in pixels:
                zf.write(folder / name, name)
    shots_file = tmp_path / "shots.txt"
    shots_file.write_text(LIST_TEXT)
    loaded = load_target(str(data), SIZE, shots=3, shots_file=str(shots_file))
    expected = torch.stack([as_tensor(pixels[name]) for name in LISTED])
    assert torch.equal(loaded.shots, expected)
    assert loaded.full.shape[0] == 12
    assert f"shots listed in {shots_file}: {', '.join(LISTED)}" in loaded.description


def test_a_relative_shots_file_is_taken_from_the_working_directory(target, tmp_path,
                                                                   monkeypatch):
    folder, pixels = target
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "shots.txt").write_text(LIST_TEXT)
    monkeypatch.chdir(tmp_path)
    loaded = load_target("target", SIZE, shots=3, shots_file="lists/shots.txt")
    assert torch.equal(loaded.shots[0], as_tensor(pixels["img007.png"]))


def test_without_a_shots_file_the_seeded_draw_is_unchanged(target):
    folder, _ = target
    drawn = few_shot_subset(folder, 4, seed=5)
    for shots_file in (None, ""):
        loaded = load_target(str(folder), SIZE, shots=4, seed=5, shots_file=shots_file)
        assert loaded.description.endswith(f"shots: {', '.join(drawn)})")
        assert torch.equal(loaded.shots, load_images(folder, SIZE, files=drawn))


# --- one clear error per bad list ---------------------------------------------------------------


@pytest.mark.parametrize("text,shots,message", [
    (None, 3, "does not exist"),
    ("", 3, "lists no file names"),
    ("# only a comment\n\n", 3, "lists no file names"),
    ("img001.png\nimg002.png\n", 3, "lists 2 file names but target.shots = 3"),
    ("img001.png\nnot-there.png\nimg002.png\n", 3, "'not-there.png', listed in"),
    ("img001.png\nimg001.png\nimg002.png\n", 3, "lists 'img001.png' more than once"),
])
def test_a_bad_shots_file_is_named(target, tmp_path, text, shots, message):
    folder, _ = target
    shots_file = tmp_path / "shots.txt"
    if text is not None:
        shots_file.write_text(text)
    with pytest.raises(DataError) as err:
        load_target(str(folder), SIZE, shots=shots, shots_file=str(shots_file))
    assert message in str(err.value) and str(shots_file) in str(err.value)


def test_a_shots_file_does_not_apply_to_toyfaces(tmp_path):
    shots_file = tmp_path / "shots.txt"
    with pytest.raises(DataError, match="shots.txt applies to image folders"):
        load_target("toyfaces:babies", SIZE, shots=3, shots_file=str(shots_file))
    with pytest.raises(ConfigError, match=r"target\.shots_file = .*ToyFaces"):
        TargetSpec(data="toyfaces:babies", shots_file=str(shots_file))


def test_files_and_a_shots_file_together_are_refused(target, tmp_path):
    folder, _ = target
    with pytest.raises(ConfigError) as err:
        TargetSpec(data=str(folder), files=["img001.png"], shots_file="shots.txt")
    assert "target.files" in str(err.value) and "target.shots_file" in str(err.value)
    with pytest.raises(ConfigError, match=r"target\.files and target\.shots_file"):
        load_experiment(None, [f"target.data={folder}", "target.shots=1",
                               "target.files=[img001.png]", "target.shots_file=shots.txt"])
    with pytest.raises(DataError, match="keep one of target.files and target.shots_file"):
        load_target(str(folder), SIZE, shots=1, files=["img001.png"], shots_file="shots.txt")


# --- the preflight --------------------------------------------------------------------------------


def folder_spec(source: Path, folder: Path, shots_file: str):
    from _tiny_world import tiny_spec

    return tiny_spec(source, target=TargetSpec(data=str(folder), shots=3, shots_file=shots_file),
                     metrics=MetricsSpec(fid_backbone="toy", fid_n_gen=24, lpips_backbone="toy",
                                         lpips_n_samples=20, n_grid=4, batch_size=12))


def test_the_preflight_checks_each_shots_file(source_checkpoint, target, tmp_path):
    folder, _ = target
    good = tmp_path / "shots.txt"
    good.write_text(LIST_TEXT)
    preflight.check_runs([folder_spec(source_checkpoint, folder, str(good))])
    missing = tmp_path / "missing.txt"
    specs = [folder_spec(source_checkpoint, folder, str(good)),
             folder_spec(source_checkpoint, folder, str(missing))]  # same folder, other list
    with pytest.raises(DataError, match="missing.txt does not exist"):
        preflight.check_runs(specs)


def test_a_missing_shots_file_fails_before_any_run_folder(source_checkpoint, target, tmp_path):
    folder, _ = target
    out = tmp_path / "runs"
    missing = tmp_path / "missing-10shot.txt"
    result = cli.invoke(app, [
        "run", "--methods", "tgan", "--set", f"source.checkpoint={source_checkpoint}",
        "--target", str(folder), "--set", f"target.shots_file={missing}",
        "--set", "metrics.fid_n_gen=24", "--set", "metrics.lpips_n_samples=20",
        "--set", "metrics.n_grid=4", "--set", "metrics.batch_size=12", "--workers", "1",
        "--out", str(out)])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert f"shots file {missing} does not exist" in lines[0]
    assert not out.exists()


def test_a_run_adapts_on_the_listed_shots_and_records_the_list(source_checkpoint, target,
                                                                tmp_path):
    folder, pixels = target
    shots_file = tmp_path / "shots.txt"
    shots_file.write_text(LIST_TEXT)
    out = tmp_path / "runs"
    result = cli.invoke(app, [
        "run", "--methods", "tgan", "--set", f"source.checkpoint={source_checkpoint}",
        "--target", str(folder), "--protocol", "embedded", "--set",
        f"target.shots_file={shots_file}",
        "--set", "target.shots=3", "--iterations", "0", "--set", "metrics.fid_n_gen=24",
        "--set", "metrics.lpips_n_samples=20", "--set", "metrics.n_grid=4",
        "--set", "metrics.batch_size=12", "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    [run_dir] = [p for p in out.iterdir() if p.is_dir()]
    assert read_toml(run_dir / "config.toml")["target"]["shots_file"] == str(shots_file)
    shots = np.load(run_dir / "shots.npy")
    assert np.array_equal(shots, np.stack([pixels[name] for name in LISTED]))
    real_set = read_metadata(run_dir / "trajectory.parquet")["protocol"]["fid_real_set"]
    assert f"shots listed in {shots_file}: {', '.join(LISTED)}" in real_set


@pytest.mark.parametrize("name,domain", [("ffhq-babies", "babies"),
                                         ("ffhq-sunglasses", "sunglasses"),
                                         ("ffhq-sketches", "sketches"),
                                         ("ffhq-afhq-cat", "afhq-cat")])
def test_the_ffhq_configs_require_their_shot_list(name, domain, source_checkpoint, tmp_path,
                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_pngs(tmp_path / "data" / domain, 12)
    cfg = load_experiment(EXPERIMENTS / f"{name}.toml",
                          [f"source.checkpoint={source_checkpoint}"])
    assert cfg.target.shots_file == f"data/{domain}-10shot.txt"
    with pytest.raises(DataError, match=f"shots file data/{domain}-10shot.txt does not exist"):
        preflight.check_runs(cfg.runs()[:1])
