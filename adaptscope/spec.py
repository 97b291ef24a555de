"""The run description: a run is a pure function of its RunSpec.

An experiment (a TOML file) names methods x seeds over one source, target, schedule, loop and
metric protocol; it expands into one `RunSpec` per (method, seed), which is all a launcher needs
to execute or resume that run anywhere. Both training and tracking read these plain dataclasses;
loading an experiment and checking its methods belongs to `adaptscope.train.experiment`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptscope.config import from_dict, to_dict
from adaptscope.embedded import TOY_SOURCE, asset

EMBEDDED_SOURCE = TOY_SOURCE


@dataclass
class SourceSpec:
    """The pretrained model adaptation starts from."""

    checkpoint: str = EMBEDDED_SOURCE  # a .pt path, or "toy" for the shipped embedded model
    name: str = "toyfaces-source"
    weights: str = "g"  # start G_t (and the frozen G_s) from "g" [CDC] or "g_ema" [RSSA]


@dataclass
class TargetSpec:
    """The target domain: its full set (for FID) and the few shots adapted on."""

    data: str = "toyfaces:sunglasses"  # "toyfaces:<domain>", or an image folder / zip
    name: str = ""  # label in tables; defaults to the domain or folder name
    shots: int = 10
    shots_seed: int = 0  # which shots (fixed across methods and seeds)
    files: list[str] | None = None  # explicit shot file names (folders only)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.data.split(":", 1)[1] if self.data.startswith("toyfaces:") else Path(
            self.data).name


@dataclass
class ScheduleSpec:
    """When to evaluate: iteration 0, then every `eval_every`, up to `iterations`."""

    iterations: int = 3000
    eval_every: int = 500

    def evaluation_points(self) -> list[int]:
        points = list(range(0, self.iterations + 1, self.eval_every))
        return points if points[-1] == self.iterations else [*points, self.iterations]


@dataclass
class LoopSpec:
    """The shared adaptation loop (rosinality's train.py semantics; [C] defaults)."""

    batch: int = 4
    lr: float = 0.002
    r1_gamma: float = 10.0
    r1_every: int = 16
    path_regularize: float = 2.0  # 0 disables path-length regularisation
    path_every: int = 4
    path_batch_shrink: int = 2
    mixing: float = 0.9
    ema_decay: float = 0.5 ** (32 / 10_000)  # 0.99778


@dataclass
class MetricsSpec:
    """The evaluation protocol, recorded with every trajectory."""

    fid_backbone: str = "inception"  # "inception" or "toy" (see adaptscope.track.backbones)
    fid_n_gen: int = 5000
    lpips_backbone: str = "vgg"  # "vgg", "alex" or "toy"
    lpips_n_samples: int = 1000
    lpips_max_per_cluster: int = 50
    realism: str = "none"  # p_t scorer: "none", "toy" (ToyFaces targets) or "classifier"
    realism_classifier: str = ""  # with realism = "classifier": a .pt from `realism train`
    ground_truth: bool = False  # embedded world only: attribute coverage and replication
    n_grid: int = 8  # fixed latents shown in the sample grids
    batch_size: int = 50
    weights_dir: str = ""  # where backbone weights are looked for first


@dataclass
class RunSpec:
    """Everything one run needs."""

    experiment: str
    method: str
    seed: int
    source: SourceSpec = field(default_factory=SourceSpec)
    target: TargetSpec = field(default_factory=TargetSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    train: LoopSpec = field(default_factory=LoopSpec)
    metrics: MetricsSpec = field(default_factory=MetricsSpec)
    method_params: dict[str, Any] = field(default_factory=dict)
    plugins: list[str] = field(default_factory=list)  # modules / .py files registering methods
    device: str = "cpu"
    threads: int = 1

    @property
    def run_id(self) -> str:
        return _slug(f"{self.experiment}-{self.target.label}-{self.method}-s{self.seed}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass
class ExperimentConfig:
    """A TOML experiment: methods x seeds over one protocol."""

    name: str = "embedded-default"
    methods: list[str] = field(default_factory=lambda: ["tgan", "freezed", "cdc", "dcl"])
    # Your own methods: importable module names or .py files (relative to the working
    # directory) whose @register_method classes can then be named in `methods`.
    plugins: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "cpu"
    threads: int = 1  # torch threads per run
    workers: int = 0  # runs in parallel; 0: one per CPU core on the CPU, 1 on a GPU
    source: SourceSpec = field(default_factory=SourceSpec)
    target: TargetSpec = field(default_factory=TargetSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    train: LoopSpec = field(default_factory=LoopSpec)
    metrics: MetricsSpec = field(default_factory=MetricsSpec)
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def runs(self) -> list[RunSpec]:
        return [self.spec_for(m, s) for m in self.methods for s in self.seeds]

    def spec_for(self, method: str, seed: int) -> RunSpec:
        """The run of `method` (a registered name, or a label for a run trained elsewhere)."""
        return RunSpec(experiment=self.name, method=method, seed=seed, source=self.source,
                       target=self.target, schedule=self.schedule, train=self.train,
                       metrics=self.metrics, method_params=dict(self.method_params.get(method, {})),
                       plugins=list(self.plugins), device=self.device, threads=self.threads)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def default_config_path() -> Path:
    """The embedded default experiment shipped with the package."""
    return asset("embedded-default.toml")


def spec_from_dict(data: dict[str, Any]) -> RunSpec:
    """Rebuild a RunSpec from its `to_dict()` form (a run directory's config.toml)."""
    return from_dict(RunSpec, data, "run config")


def source_checkpoint_path(source: SourceSpec) -> Path:
    """The file the source model is read from ("toy" names the shipped embedded model)."""
    if source.checkpoint == EMBEDDED_SOURCE:
        return asset("toy_source.pt")
    return Path(source.checkpoint)
