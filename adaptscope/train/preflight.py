"""Checking every planned run before the first write, so a bad input leaves nothing half-made.

`adaptscope run` calls these for the runs it will execute, before any run folder exists (or, on
`--resume`, before anything in one is written). Each distinct input is checked once however many
runs share it:

- the settings' ranges (checked when the spec is built, `adaptscope.spec`) and whether the
  metrics settings fit the target (no toy realism or ground truth for an image folder);
- the source checkpoint, loaded strictly, with the networks adaptation needs;
- the target: its full set and its shots, loaded at the source's resolution (enough images,
  every image readable);
- the realism classifier file, where p_t is measured with one: a missing file is named with
  the `adaptscope realism train` command that makes it;
- the metric backbones, built as the evaluator builds them (this finds missing weight files),
  on the CPU;
- the device;
- for a run being resumed: its config, its trajectory and its checkpoint are readable.

Nothing here changes what a run computes: the runs seed every RNG themselves when they start.
"""

from __future__ import annotations

import errno
import os
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from adaptscope.embedded import TOY_DIFFUSION_SOURCE
from adaptscope.errors import CheckpointError, ConfigError, DataError, WeightsError
from adaptscope.methods import get_method
from adaptscope.models import Generator, LoadedCheckpoint, load_checkpoint
from adaptscope.models.diffusion import LoadedDiffusion
from adaptscope.spec import (
    EMBEDDED_SOURCE,
    MetricsSpec,
    RunSpec,
    SourceSpec,
    TargetSpec,
    check_metrics_fit_target,
    embedded_source_family,
    family_mismatch,
    source_checkpoint_path,
)
from adaptscope.track.evaluate import set_size_problems
from adaptscope.track.rundir import RunDir
from adaptscope.track.store import recorded_iterations
from adaptscope.track.target import TargetData, load_target


def check_runs(specs: Sequence[RunSpec]) -> None:
    """Fail with one AdaptscopeError naming the input and its fix, before any run is written,
    when a run of `specs` could not start or could not be measured."""
    sizes: dict[tuple[str, str, str], int] = {}  # (checkpoint, weights, family) -> resolution
    seen = _Seen()
    for spec in specs:
        family = get_method(spec.method).family
        key = (str(source_checkpoint_path(spec.source)), spec.source.weights, family)
        if key not in sizes:
            sizes[key] = _check_source(spec.source, family, spec.method)
        check_measurable(spec, sizes[key], seen)


class _Seen:
    """The inputs already checked, so each distinct one is checked once however many runs
    share it."""

    def __init__(self) -> None:
        self.targets: dict[tuple[Any, ...], TargetData] = {}
        self.backbones: set[tuple[Any, ...]] = set()
        self.devices: set[str] = set()


def check_measurable(spec: RunSpec, size: int, seen: _Seen | None = None) -> None:
    """The target, the metrics and the device of `spec`, for a generator of `size` px: what a
    run (`adaptscope run`) and a tracked series (`adaptscope track`) both need."""
    seen = seen or _Seen()
    t = spec.target
    target_key = (t.data, size, t.shots, t.shots_seed, tuple(t.files or ()) or None,
                  t.shots_file)
    if target_key not in seen.targets:
        seen.targets[target_key] = _check_target(t, size)
    target = seen.targets[target_key]
    check_metrics_fit_target(spec.metrics, spec.target)
    problems = set_size_problems(spec.metrics, len(target.full), len(target.shots))
    if problems:
        raise DataError(f"target {target.description}: " + "; ".join(problems))
    m = spec.metrics
    if m.realism == "classifier":
        _check_realism_classifier(spec)
    metrics_key = (m.fid_backbone, m.lpips_backbone, m.weights_dir, m.realism,
                   m.realism_classifier, m.ground_truth, target.domain)
    if metrics_key not in seen.backbones:
        _check_backbones(m, target.domain)
        seen.backbones.add(metrics_key)
    if spec.device not in seen.devices:
        _check_device(spec.device)
        seen.devices.add(spec.device)


def check_track(spec: RunSpec, checkpoints: Sequence[tuple[int, Path]],
                include_source: bool) -> None:
    """What `adaptscope track` needs before it writes: the first checkpoint it evaluates loads
    with a `g_ema` (its size is the target's resolution), and the target, metrics and device
    fit; one error naming the input, and nothing created."""
    first = (source_checkpoint_path(spec.source)
             if include_source and all(i != 0 for i, _ in checkpoints)
             else min(checkpoints)[1] if checkpoints else None)
    if first is None:
        raise CheckpointError("no checkpoints to evaluate: give checkpoint files or folders, or "
                              "drop --no-source")
    if not Path(first).is_file():
        raise CheckpointError(f"checkpoint {first} does not exist")
    check_measurable(spec, int(load_checkpoint(first).g_ema.size))


def load_source(source: SourceSpec) -> tuple[LoadedCheckpoint, Generator]:
    """The source checkpoint, loaded strictly, and the generator adaptation starts from; the
    one check that it holds what adaptation needs (preflight and the loop alike)."""
    path = source_checkpoint_path(source)
    if not path.is_file():
        hint = ("the shipped toy model is missing from the installation; rebuild it with "
                "`adaptscope pretrain source`" if source.checkpoint == EMBEDDED_SOURCE
                else "download it or set source.checkpoint (--set source.checkpoint=PATH)")
        raise CheckpointError(f"source checkpoint {path} does not exist: {hint}")
    loaded = load_checkpoint(path)
    if loaded.d is None or (loaded.g is None and source.weights == "g"):
        raise CheckpointError(
            f"{path} has no {'discriminator' if loaded.d is None else 'g'}: adaptation needs a "
            "training checkpoint with 'g' (or set source.weights = 'g_ema') and 'd'")
    return loaded, loaded.g if source.weights == "g" else loaded.g_ema


def load_diffusion_source(source: SourceSpec) -> LoadedDiffusion:
    """The diffusion source (an adaptscope file, a diffusers folder or an ADM checkpoint),
    loaded strictly: the one loader of the preflight and the loop."""
    from adaptscope.models.diffusion_checkpoint import load_diffusion_source as load

    path = source_checkpoint_path(source)
    if not path.exists():
        hint = ("the shipped toy diffusion model is missing from the installation; rebuild it "
                "with `adaptscope pretrain diffusion`"
                if source.checkpoint == TOY_DIFFUSION_SOURCE
                else "download it or set source.checkpoint (--set source.checkpoint=PATH)")
        raise CheckpointError(f"source checkpoint {path} does not exist: {hint}")
    return load(path)


def _check_source(source: SourceSpec, family: str = "gan", method: str = "") -> int:
    """Load the source checkpoint as `method`'s family needs it; return the resolution of the
    generator adapted. A source of the other family is refused in one line."""
    shipped = embedded_source_family(source)
    if shipped is not None and shipped != family:
        raise family_mismatch(method, family, source.checkpoint, shipped)
    try:
        if family == "diffusion":
            return int(load_diffusion_source(source).model.size)
        return int(load_source(source)[1].size)
    except CheckpointError:
        other = "gan" if family == "diffusion" else "diffusion"
        if _reads_as(source, other):
            raise family_mismatch(method, family, source.checkpoint, other) from None
        raise


def _reads_as(source: SourceSpec, family: str) -> bool:
    """Whether the source loads as a model of `family` (to name a mismatch, not to use it)."""
    try:
        if family == "diffusion":
            load_diffusion_source(source)
        else:
            load_source(source)
    except (CheckpointError, ConfigError):
        return False
    return True


def _check_target(target: TargetSpec, size: int) -> TargetData:
    """Load the full set and the shots as a run would."""
    if not target.is_toyfaces and not Path(target.data).exists():
        raise DataError(f"target data {target.data} does not exist: put the full target set "
                        "there (an image folder or .zip) or set target.data "
                        "(--set target.data=PATH)")
    return load_target(target.data, size, target.shots, target.shots_seed, target.files,
                       target.shots_file, target.validation_fraction)


def _check_realism_classifier(spec: RunSpec) -> None:
    """The classifier file p_t is measured with exists; if not, say how to make it for this
    source and target (a file check: it runs before any backbone is built or downloaded)."""
    path = spec.metrics.realism_classifier
    if Path(path).is_file():
        return
    source = source_checkpoint_path(spec.source)
    args = ["adaptscope", "realism", "train", "--target", spec.target.data,
            "--source-checkpoint", str(source), "--out", path]
    command = shlex.join([*args, "--device", spec.device] if spec.device != "cpu" else args)
    raise WeightsError(
        f"realism classifier {path} does not exist (metrics.realism_classifier): make it with "
        f"`{command}` (or give real source images with --source FOLDER instead of "
        "--source-checkpoint), or set metrics.realism = \"none\" to run without p_t")


def _check_backbones(metrics: MetricsSpec, domain: str | None) -> None:
    """Build the metric networks as the evaluator does (on the CPU), then drop them."""
    from adaptscope.embedded.toynet import load_toynet
    from adaptscope.track.backbones import build_extractor, lpips_net, realism_scorer

    weights_dir = metrics.weights_dir or None
    build_extractor(metrics.fid_backbone, weights_dir, "cpu")
    lpips_net(metrics.lpips_backbone, weights_dir)
    realism_scorer(metrics.realism, metrics.realism_classifier, domain)
    if metrics.ground_truth:
        load_toynet()


def _check_device(device: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device = {device!r} is not a torch device (cpu, cuda, cuda:1, "
                          "...); set --device") from err
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device = {device!r}, but no CUDA GPU is available here; run "
                              "with --device cpu or on a machine with a GPU")
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(f"device = {device!r}, but this machine has {count} CUDA "
                              f"GPU(s) (cuda:0..cuda:{count - 1}); set --device")


def check_resumable(folders: Iterable[Path]) -> None:
    """The trajectory and the checkpoint a run continues from (where it has them) are readable.

    A damaged trajectory is named with its previous version, a damaged checkpoint with what
    deleting it does; both before anything in the folder is written."""
    for path in folders:
        folder = RunDir(path)
        recorded_iterations(folder.path)
        if folder.checkpoint.exists():
            try:
                load_checkpoint(folder.checkpoint)
            except CheckpointError as err:
                raise damaged_checkpoint(folder.checkpoint, err) from err


def damaged_checkpoint(path: Path, err: CheckpointError) -> CheckpointError:
    """The error for a run checkpoint that cannot be resumed from, and what deleting it does."""
    path = Path(path)
    cause = err.__cause__
    reason = str(cause).strip().splitlines()[0] if cause is not None and str(cause).strip() \
        else str(err).split("; ")[0].removeprefix(f"{path}").lstrip(": ")
    out = path.parent.parent.parent  # <out>/<run_id>/checkpoints/latest.pt
    return CheckpointError(
        f"{path} is damaged ({reason}); delete it and run `adaptscope run --resume --out "
        f"{shlex.quote(str(out))}` "
        "again: the run then starts again from iteration 0, which gives the same rows for the "
        "same seed, and the rows already recorded are kept")


def check_before_writing(todo: Sequence[Any], out: Path) -> None:
    """Check every planned run about to execute (no other writer holds its folder; its inputs,
    backbones and, when resumed, its files), then make sure `out` can take the run folders: all
    before the first write."""
    if not todo:
        return
    for r in todo:  # another writer (or a `.lock` that is none) is one line, before anything
        RunDir(r.run_dir).check_not_busy()
    check_runs([r.spec for r in todo])
    check_resumable([r.run_dir for r in todo])
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(out))
