"""The run folder's one owner: every name inside `runs/<run_id>/` and what each file means.

    config.toml          the resolved RunSpec (written once; a different one is refused)
    trajectory.parquet   one row per evaluated iteration (written only by the store)
    samples/iter_XXXXXX.png|npy   the fixed-latent sample grid of each evaluation
    shots.png, shots.npy the few-shot training images
    checkpoints/latest.pt everything needed to resume bit-for-bit
    DONE                 written when the schedule (or the tracked checkpoints) are finished
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adaptscope.config import dumps_toml, read_toml
from adaptscope.errors import RunDirectoryError
from adaptscope.spec import RunSpec, spec_from_dict

CONFIG_FILE = "config.toml"
TRAJECTORY_FILE = "trajectory.parquet"
SAMPLES_DIR = "samples"
SHOTS_NPY = "shots.npy"
SHOTS_PNG = "shots.png"
CHECKPOINT_FILE = "checkpoints/latest.pt"
DONE_FILE = "DONE"


def sample_file(iteration: int, suffix: str) -> str:
    """Relative path of the sample grid saved at `iteration` (`suffix` is 'png' or 'npy')."""
    return f"{SAMPLES_DIR}/iter_{iteration:06d}.{suffix}"


@dataclass(frozen=True)
class RunDir:
    """Paths and markers of one run folder."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def trajectory(self) -> Path:
        return self.path / TRAJECTORY_FILE

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def shots_npy(self) -> Path:
        return self.path / SHOTS_NPY

    @property
    def shots_png(self) -> Path:
        return self.path / SHOTS_PNG

    def sample(self, iteration: int, suffix: str) -> Path:
        return self.path / sample_file(iteration, suffix)

    def is_started(self) -> bool:
        return self.config.exists()

    def is_done(self) -> bool:
        return (self.path / DONE_FILE).exists()

    def mark_done(self, note: str) -> None:
        (self.path / DONE_FILE).write_text(note.rstrip("\n") + "\n")

    def read_spec(self) -> RunSpec:
        return spec_from_dict(read_toml(self.config))

    def write_spec(self, spec: RunSpec) -> None:
        """Record the resolved config; refuse a folder that holds a run with another config."""
        data = spec.to_dict()
        if self.config.exists():
            if self.read_spec().to_dict() != data:
                raise RunDirectoryError(f"{self.path} already holds a run with a different "
                                        "config; use another --out directory or delete it")
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self.config.write_text(dumps_toml(data))


def started_runs(out: Path) -> list[RunDir]:
    """Every run folder directly under `out` that has a config, by name."""
    return [RunDir(p.parent) for p in sorted(Path(out).glob(f"*/{CONFIG_FILE}"))]
