"""The adaptation loop without its metrics: a tracker stand-in that records what the loop hands
it, and a target of the shots alone, so a run of a few iterations on the tiny model takes about
a second. For tests of training state, not of evaluation."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from adaptscope.embedded import toyfaces
from adaptscope.embedded.toynet import load_toynet
from adaptscope.models import FixedLatents
from adaptscope.track.target import TargetData
from adaptscope.train import diffusion_training, gan_training, loop


def shots_only(data: str, size: int, shots: int, seed: int, *_: Any) -> TargetData:
    """The ToyFaces target as `load_target` gives it, with the shots as the whole real set (the
    loop reads only the shots; rendering the full set costs seconds)."""
    domain = data.split(":", 1)[1]
    idx = toyfaces.few_shot_indices(domain, shots, seed)
    images = toyfaces.render_tensor(domain, idx, size)
    return TargetData(images, images, f"{data} shots", domain, idx)


def snapshot(sampled: torch.nn.Module) -> dict[str, Any]:
    """What evaluation would see: g_ema, the method's whole state (its modules and their moving
    averages included) and the sampled images of four fixed latents."""
    with torch.no_grad():
        z, noise = FixedLatents(sampled.g, 1234).draw(4)
        images = sampled([z], noise=noise)[0]
    return {"g_ema": copy.deepcopy(sampled.g.state_dict()),
            "method": copy.deepcopy(sampled.method.state_dict()), "images": images}


class RecordingTracker:
    """Stands in for `Tracker`: keeps each call's iteration, training columns and `snapshot`."""

    def __init__(self, *_: Any, **__: Any):
        self.evaluator = SimpleNamespace(lpips_net=load_toynet())
        self.rows: list[dict[str, Any]] = []

    def record(self, iteration: int, images_seen: int, wall_time_s: float,
               sampled: torch.nn.Module, training: dict[str, Any] | None = None) -> None:
        self.rows.append({"iteration": iteration, **(training or {}), **snapshot(sampled)})

    record_cheap = record


def install(monkeypatch: pytest.MonkeyPatch) -> list[RecordingTracker]:
    """Patch the loop to use `RecordingTracker` and `shots_only`; returns the trackers made, one
    per `run_adaptation` call, in order."""
    made: list[RecordingTracker] = []

    def tracker(*args: Any, **kwargs: Any) -> RecordingTracker:
        made.append(RecordingTracker(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(loop, "Tracker", tracker)
    for training in (gan_training, diffusion_training):  # each family's target loading
        monkeypatch.setattr(training, "load_target", shots_only)
    return made


def same(a: Any, b: Any) -> bool:
    """Equal bit for bit, through dicts, lists and tensors."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    return a == b
