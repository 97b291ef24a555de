"""The two places an export writes to: TensorBoard event files and offline W&B runs.

Both are optional extras (`pip install 'adaptscope[tensorboard]'`, `'adaptscope[wandb]'`), so each
is imported only when it is asked for, and a missing one is one error naming the command that
installs it. A sink takes a run's rows one step at a time (the row's iteration) and says whether
what it took is on disk once flushed: TensorBoard's writer flushes on demand, while an offline W&B
run is complete only when it is finished.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from adaptscope.errors import ConfigError

TENSORBOARD = "tensorboard"
WANDB = "wandb"
BACKENDS: tuple[str, ...] = (TENSORBOARD, WANDB)
# What each backend imports, and the package that provides it.
_MODULES = {TENSORBOARD: ("torch.utils.tensorboard", "tensorboard"), WANDB: ("wandb", "wandb")}
_NAMES = {TENSORBOARD: "TensorBoard", WANDB: "Weights & Biases"}
WANDB_PROJECT = "adaptscope"  # where `wandb sync` uploads the offline runs (`-p` changes it)
IMAGE_TAG = "samples"


def install_command(backend: str) -> str:
    """The pip command that installs what `backend` needs."""
    return f"pip install 'adaptscope[{backend}]'"


def load_backend(backend: str) -> Any:
    """The module `backend` writes with; a ConfigError naming the install command when its
    package is missing (checked before anything is written)."""
    if backend not in _MODULES:
        raise ConfigError(f"{backend!r} is not an export; give one of {', '.join(BACKENDS)}")
    module, package = _MODULES[backend]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(f"exporting to {_NAMES[backend]} needs the {package} package, which "
                          f"cannot be imported ({err}); install it with: "
                          f"{install_command(backend)}") from err


class Sink(Protocol):
    """Where one run's rows go, in increasing steps."""

    def write(self, step: int, scalars: Mapping[str, float], image: np.ndarray | None) -> None:
        """One row: its scalars by tag and, where it has one, its sample grid (H, W, 3 uint8)."""

    def flush(self) -> bool:
        """Push what was written out; True when it is then on disk."""

    def close(self) -> None:
        """Finish; everything written is on disk afterwards."""


class TensorBoardSink:
    """Event files in `folder` (one folder per run), through torch's SummaryWriter."""

    def __init__(self, folder: Path) -> None:
        writer = load_backend(TENSORBOARD).SummaryWriter
        self._writer = writer(log_dir=str(folder))

    def write(self, step: int, scalars: Mapping[str, float], image: np.ndarray | None) -> None:
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, global_step=step)
        if image is not None:
            self._writer.add_image(IMAGE_TAG, image, global_step=step, dataformats="HWC")

    def flush(self) -> bool:
        self._writer.flush()
        return True

    def close(self) -> None:
        self._writer.close()


class WandbSink:
    """One offline W&B run under `root/wandb/`, with the run id as its id and name.

    Each sink is a new offline run directory that resumes the same run id, so `wandb sync`
    uploads the directories of one run in order, each adding the steps it holds. It is never
    online, whatever WANDB_MODE says, and it leaves the caller's own W&B run alone.
    """

    def __init__(self, root: Path, run_id: str, config: Mapping[str, Any],
                 group: str | None) -> None:
        wandb = load_backend(WANDB)
        root.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(silent=True, console="off", disable_git=True, save_code=False,
                                  reinit="create_new")
        self._image = wandb.Image
        self._run = wandb.init(dir=str(root), project=WANDB_PROJECT, id=run_id, name=run_id,
                               group=group, config=dict(config), resume="allow", mode="offline",
                               settings=settings)

    def write(self, step: int, scalars: Mapping[str, float], image: np.ndarray | None) -> None:
        data: dict[str, Any] = dict(scalars)
        if image is not None:
            data[IMAGE_TAG] = self._image(image, caption=f"iteration {step}")
        self._run.log(data, step=step)

    def flush(self) -> bool:
        return False  # an offline run's log is whole only once the run is finished

    def close(self) -> None:
        self._run.finish()


def stop_wandb() -> None:
    """Stop the W&B service process this process started, if any (it would otherwise stop
    only when the process exits)."""
    import sys

    wandb = sys.modules.get(WANDB)
    if wandb is not None and hasattr(wandb, "teardown"):
        wandb.teardown()
