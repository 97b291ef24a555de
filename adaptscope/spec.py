"""The run description: a run is a pure function of its RunSpec.

An experiment (a TOML file) names methods x seeds over one source, target, schedule, loop and
metric protocol; it expands into one `RunSpec` per (method, seed), which is all a launcher needs
to execute or resume that run anywhere. Both training and tracking read these plain dataclasses;
loading an experiment and checking its methods belongs to `adaptscope.train.experiment`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from adaptscope.config import from_dict, to_dict
from adaptscope.embedded import TOY_DIFFUSION_SOURCE, TOY_SOURCE, TOYFACES_PREFIX, asset
from adaptscope.errors import ConfigError
from adaptscope.protocols import (
    CUSTOM,
    LPIPS_MEMBER_RULES,
    LPIPS_SMALL_CLUSTER_RULES,
    PROTOCOLS,
    matching_protocol,
)
from adaptscope.protocols import SETTINGS as PROTOCOL_SETTINGS

EMBEDDED_SOURCE = TOY_SOURCE
AUTO = "auto"  # a metrics setting that follows the target (see `resolve_metrics`)
REALISM_CHOICES = (AUTO, "none", "toy", "classifier")
AUGMENTS = ("none", "ada")  # train.augment
SAMPLER_PRECISIONS = ("float32", "bfloat16")  # metrics.sampler_precision
DEFAULT_SAMPLER_STEPS = 10  # metrics.sampler_steps left out
# Bounds refused at load: beyond them a run cannot finish, and its folder and trajectory would
# be made before it failed (10**15 iterations ran out of memory listing its evaluation points).
MAX_ITERATIONS = 10**9
MAX_EVALUATIONS = 100_000  # of each kind, full and cheap: rows of one trajectory
SEED_LIMIT = 2**32  # numpy and the samplers take seeds in [0, 2**32)


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    """Raise ConfigError naming the setting `key`, its `value` and the `rule` it breaks."""
    if not ok:
        raise ConfigError(f"{key} = {value!r} is not allowed: it needs {rule}")


def _check_seed(key: str, seed: int) -> None:
    _check(0 <= seed < SEED_LIMIT, key, seed, f"0 <= seed < {SEED_LIMIT} (2**32)")


def _check_cadence(key: str, every: int, iterations: int, kind: str) -> None:
    """At most MAX_EVALUATIONS evaluations of `kind` at every `every` iterations."""
    _check(iterations // every <= MAX_EVALUATIONS, key, every,
           f"at most {MAX_EVALUATIONS:,} {kind} evaluations: {key} >= "
           f"{-(-iterations // MAX_EVALUATIONS)} for schedule.iterations = {iterations}")


@dataclass
class SourceSpec:
    """The pretrained model adaptation starts from."""

    # a .pt path or a diffusers folder; "toy" / "toy-diffusion" for the shipped embedded models
    checkpoint: str = EMBEDDED_SOURCE
    name: str = "toyfaces-source"
    weights: str = "g"  # start G_t (and the frozen G_s) from "g" [CDC] or "g_ema" [RSSA]

    def __post_init__(self) -> None:
        _check(self.weights in ("g", "g_ema"), "source.weights", self.weights, '"g" or "g_ema"')


@dataclass
class TargetSpec:
    """The target domain: its full set (for FID) and the few shots adapted on."""

    data: str = "toyfaces:sunglasses"  # "toyfaces:<domain>", or an image folder / zip
    name: str = ""  # label in tables; defaults to the domain or folder name
    shots: int = 10
    shots_seed: int = 0  # which shots (fixed across methods and seeds)
    files: list[str] | None = None  # explicit shot file names (folders only)
    shots_file: str = ""  # a text file listing the shot file names, one a line (folders only)
    # The share of the full set (never a shot) held out for choosing an iteration: FID against
    # it is `fid_selection`, and FID is reported against the rest, so selecting the best
    # iteration does not look at the images it is reported on. None or 0: no split.
    validation_fraction: float | None = None

    def __post_init__(self) -> None:
        _check(self.shots >= 1, "target.shots", self.shots, "target.shots >= 1")
        if self.validation_fraction is not None:
            _check(0 <= self.validation_fraction < 1, "target.validation_fraction",
                   self.validation_fraction, "0 <= target.validation_fraction < 1 (0: no split)")
        _check_seed("target.shots_seed", self.shots_seed)
        if self.shots_file and self.files is not None:
            raise ConfigError(
                f"target.files and target.shots_file = {self.shots_file!r} both name the shots; "
                "keep one of them (list the names in the shots file, or remove "
                "target.shots_file)")
        if self.shots_file and self.is_toyfaces:
            raise ConfigError(
                f"target.shots_file = {self.shots_file!r} is for an image folder or zip, but "
                f"target.data = {self.data!r} is a ToyFaces domain, whose shots are drawn by "
                "target.shots_seed; remove target.shots_file (--set target.shots_file=\"\")")

    @property
    def is_toyfaces(self) -> bool:
        """Whether the target is an embedded ToyFaces domain (known attributes), not a folder."""
        return self.data.startswith(TOYFACES_PREFIX)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.data.split(":", 1)[1] if self.data.startswith("toyfaces:") else Path(
            self.data).name


@dataclass
class ScheduleSpec:
    """When to evaluate: iteration 0, then every `eval_every`, up to `iterations` (the full
    evaluation); and every `cheap_every` in between, only the cheap metrics (p_t and the
    nearest-shot LPIPS), so realism curves are dense enough to tell when p_t converges."""

    iterations: int = 3000
    eval_every: int = 500
    cheap_every: int = 0  # 0: no cheap evaluations

    def __post_init__(self) -> None:
        _check(self.iterations >= 0, "schedule.iterations", self.iterations,
               "schedule.iterations >= 0")
        _check(self.iterations <= MAX_ITERATIONS, "schedule.iterations", self.iterations,
               f"schedule.iterations <= {MAX_ITERATIONS:,}")
        _check(self.eval_every >= 1, "schedule.eval_every", self.eval_every,
               "schedule.eval_every >= 1")
        _check_cadence("schedule.eval_every", self.eval_every, self.iterations, "full")
        _check(self.cheap_every >= 0, "schedule.cheap_every", self.cheap_every,
               "schedule.cheap_every >= 0 (0: no cheap evaluations)")
        if self.cheap_every:
            _check_cadence("schedule.cheap_every", self.cheap_every, self.iterations, "cheap")

    def is_full(self, iteration: int) -> bool:
        """Whether `iteration` gets the full evaluation (every metric, a sample grid, a
        checkpoint): iteration 0, every `eval_every`, and the last."""
        return iteration % self.eval_every == 0 or iteration == self.iterations

    def is_cheap(self, iteration: int) -> bool:
        """Whether `iteration` gets only the cheap evaluation: a multiple of `cheap_every` that
        is not a full point (a full evaluation measures the cheap metrics too)."""
        return (self.cheap_every > 0 and 0 < iteration <= self.iterations
                and iteration % self.cheap_every == 0 and not self.is_full(iteration))

    def evaluation_points(self) -> list[int]:
        """Iterations of the full evaluation, in order."""
        points = list(range(0, self.iterations + 1, self.eval_every))
        return points if points[-1] == self.iterations else [*points, self.iterations]

    def cheap_points(self) -> list[int]:
        """Iterations of the cheap evaluation, in order."""
        if self.cheap_every == 0:
            return []
        return [i for i in range(self.cheap_every, self.iterations + 1, self.cheap_every)
                if not self.is_full(i)]

    def rule(self, cheap: bool = True) -> dict[str, int]:
        """The schedule as a trajectory records it: the rule, not its points (a list of 10**7
        points made a 230 MB parquet footer). `cheap_every` is 0 where no cheap evaluation is
        recorded: none asked, none between the full ones, or `cheap=False`."""
        c = self.cheap_every
        has_cheap = cheap and 0 < c < self.iterations and c % self.eval_every != 0
        return {"iterations": self.iterations, "eval_every": self.eval_every,
                "cheap_every": c if has_cheap else 0}


@dataclass
class LoopSpec:
    """The shared adaptation loop (rosinality's train.py semantics; [C] defaults)."""

    batch: int = 4
    lr: float = 0.002
    # [C] Adam's (beta1, beta2) for G and D: rosinality's (0, 0.99); with lazy regularisation
    # both are raised to every / (every + 1), as the reference does for beta2
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 10.0
    r1_every: int = 16
    path_regularize: float = 2.0  # 0 disables path-length regularisation
    path_every: int = 4
    path_batch_shrink: int = 2
    mixing: float = 0.9
    ema_decay: float = 0.5 ** (32 / 10_000)  # 0.99778
    # Mirror each real training image at random (p 0.5, per sample, seeded) wherever it enters
    # training: every reference loop does (RandomHorizontalFlip; rosinality train.py, CDC
    # train.py:583). Evaluation always uses the unflipped images.
    flip: bool = True
    # "ada": ADA's non-leaking augmentation of real and fake images before D, with an adaptive
    # probability p (rosinality non_leaking.py; CDC train.py:218-258, its --augment).
    augment: str = "none"
    ada_target: float = 0.6  # [C] target of E[sign(D(real))]
    # [C] images for p to move by 1, the adjustment speed (rosinality non_leaking.py:43; CDC's
    # own loop moves p ada_target times as fast, train.py:182,256: 833_333 matches it)
    ada_length: int = 500_000
    ada_every: int = 256  # [C] images between adjustments of p
    # 0: p adapts from 0 towards ada_target; above 0: p stays fixed at this value (CDC's
    # --augment_p convention, train.py:181,239)
    ada_p: float = 0.0

    def __post_init__(self) -> None:
        _check(self.augment in AUGMENTS, "train.augment", self.augment,
               "one of " + ", ".join(f'"{a}"' for a in AUGMENTS))
        _check(0 < self.ada_target < 1, "train.ada_target", self.ada_target,
               "0 < train.ada_target < 1")
        _check(0 <= self.ada_p <= 1, "train.ada_p", self.ada_p, "0 <= train.ada_p <= 1")
        for key in ("batch", "r1_every", "path_every", "path_batch_shrink", "ada_length",
                    "ada_every"):
            value = getattr(self, key)
            _check(value >= 1, f"train.{key}", value, f"train.{key} >= 1")
        # lr 0 is allowed: a step that moves nothing (the loop's tests use it)
        _check(self.lr >= 0, "train.lr", self.lr, "train.lr >= 0")
        _check(self.r1_gamma >= 0, "train.r1_gamma", self.r1_gamma, "train.r1_gamma >= 0")
        _check(self.path_regularize >= 0, "train.path_regularize", self.path_regularize,
               "train.path_regularize >= 0 (0 disables it)")
        _check(0 <= self.mixing <= 1, "train.mixing", self.mixing, "0 <= train.mixing <= 1")
        _check(0 <= self.ema_decay < 1, "train.ema_decay", self.ema_decay,
               "0 <= train.ema_decay < 1")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "train.betas",
               list(self.betas), "two values, each 0 <= beta < 1, e.g. [0.0, 0.99]")


@dataclass
class MetricsSpec:
    """The evaluation protocol, recorded with every trajectory.

    `protocol` names a registered protocol (`adaptscope.protocols`) that fixes the settings
    marked below; a config may leave them out or repeat the protocol's values, and a run whose
    settings depart from them is recorded as protocol "custom". Empty or "custom": the settings
    as given (recorded as the protocol they match, if any). "auto" (the default) follows the
    target: "embedded" for a ToyFaces domain, "clean" for an image folder, so real images are
    never measured with the toy network unless asked. The settings' defaults are "clean"'s.
    """

    protocol: str = AUTO
    fid_backbone: str = "inception"  # [protocol] a `build_extractor` name
    fid_n_gen: int = 5000  # [protocol]
    fid_n_real: int = 0  # [protocol] real images for FID/KID/PRDC: 0 = the full target set
    lpips_backbone: str = "vgg"  # [protocol] "vgg", "alex" or "toy"
    lpips_n_samples: int = 1000  # [protocol]
    lpips_max_per_cluster: int = 50  # [protocol]
    lpips_members: str = "random"  # [protocol] "random" (seeded shuffle) or "first" (seed order)
    lpips_small_clusters: str = "drop"  # [protocol] clusters under 2 members: "drop" or "zero"
    # Samples of a cheap evaluation (schedule.cheap_every): the first of the full evaluation's
    # fixed latents, at most as many as it draws
    cheap_n_samples: int = 200  # [protocol]
    # CMMD (`adaptscope.metrics.cmmd`) with this CLIP extractor, a `build_extractor` name
    # ("clip-vit-l14-336"); None (left out of config.toml): no CMMD
    cmmd_backbone: str | None = None  # [protocol]
    # k of the k-NN balls: None (left out): precision/recall at k = 3 (`precision_recall`, <=)
    # and density/coverage at k = 5 (`prdc`); k: all four from `prdc(k=prdc_k)` (strict <)
    prdc_k: int | None = None  # [protocol]
    # p_t scorer: "none", "toy" (ToyFaces targets) or "classifier"; "auto": "toy" for a
    # ToyFaces target, "none" for an image folder
    realism: str = AUTO
    realism_classifier: str = ""  # with realism = "classifier": a .pt from `realism train`
    # Attribute coverage and replication (ToyFaces targets only: their attributes are known);
    # "auto": true for a ToyFaces target, false for an image folder
    ground_truth: bool | str = AUTO
    n_grid: int = 8  # fixed latents shown in the sample grids
    # A diffusion model's samples: deterministic DDIM (eta 0) from fixed initial noise with
    # `sampler_steps` steps (None: 10), the denoiser's forward passes in `sampler_precision`
    # ("float32"; "bfloat16": autocast, the sampler's own arithmetic in float32, about 2x faster
    # on a CPU; None: float32). Recorded in each diffusion trajectory's protocol metadata; a GAN
    # ignores them (left out, they stay out of its config.toml).
    sampler_steps: int | None = None
    sampler_precision: str | None = None
    # The noise a DDIM step carries on: "model" (None; the model's prediction, diffusers'
    # default) or "clipped" (re-derived from the clipped clean image, guided-diffusion's
    # `ddim_sample`, as CRDI and Uni-DAD sample ADM models)
    sampler_noise: str | None = None
    batch_size: int = 50
    weights_dir: str = ""  # where backbone weights are looked for first

    def __post_init__(self) -> None:
        _check(self.realism in REALISM_CHOICES, "metrics.realism", self.realism,
               "one of " + ", ".join(f'"{c}"' for c in REALISM_CHOICES))
        _check(self.realism != "classifier" or bool(self.realism_classifier),
               "metrics.realism_classifier", self.realism_classifier,
               'a classifier file (PATH from `adaptscope realism train`) with '
               'metrics.realism = "classifier"')
        _check(isinstance(self.ground_truth, bool) or self.ground_truth == AUTO,
               "metrics.ground_truth", self.ground_truth, 'true, false or "auto"')
        for key, low in (("fid_n_gen", 2), ("fid_n_real", 0), ("lpips_n_samples", 2),
                         ("lpips_max_per_cluster", 2), ("cheap_n_samples", 2), ("n_grid", 1),
                         ("batch_size", 1)):
            value = getattr(self, key)
            _check(value >= low, f"metrics.{key}", value, f"metrics.{key} >= {low}")
        _check(self.fid_n_real == 0 or self.fid_n_real >= 2, "metrics.fid_n_real",
               self.fid_n_real, "0 (the full target set) or at least 2 real images")
        _check(self.lpips_members in LPIPS_MEMBER_RULES, "metrics.lpips_members",
               self.lpips_members, "one of " + ", ".join(f'"{c}"' for c in LPIPS_MEMBER_RULES))
        _check(self.lpips_small_clusters in LPIPS_SMALL_CLUSTER_RULES,
               "metrics.lpips_small_clusters", self.lpips_small_clusters,
               "one of " + ", ".join(f'"{c}"' for c in LPIPS_SMALL_CLUSTER_RULES))
        _check(self.sampler_steps is None or self.sampler_steps >= 1, "metrics.sampler_steps",
               self.sampler_steps, "metrics.sampler_steps >= 1")
        _check(self.sampler_noise in (None, "model", "clipped"), "metrics.sampler_noise",
               self.sampler_noise, '"model" or "clipped"')
        _check(self.sampler_precision in (None, *SAMPLER_PRECISIONS),
               "metrics.sampler_precision", self.sampler_precision,
               " or ".join(f'"{p}"' for p in SAMPLER_PRECISIONS))
        _check(self.cmmd_backbone is None or bool(self.cmmd_backbone), "metrics.cmmd_backbone",
               self.cmmd_backbone, 'a CLIP extractor name such as "clip-vit-l14-336" (leave '
               "it out for no CMMD)")
        _check(self.prdc_k is None or self.prdc_k >= 1, "metrics.prdc_k", self.prdc_k,
               "metrics.prdc_k >= 1 (leave it out for k = 3 precision/recall and k = 5 "
               "density/coverage)")
        if self.protocol not in ("", CUSTOM, AUTO):
            PROTOCOLS.get(self.protocol)  # an unknown name fails listing the registered ones


def apply_protocol(metrics: MetricsSpec) -> MetricsSpec:
    """`metrics` with its protocol's settings filled in and `protocol` naming what they are.

    A named protocol sets the settings a config leaves at their defaults. A setting given another
    value departs from it: the run then measures with that value and records the protocol it
    matches, usually "custom", never the name it departed from (`adaptscope run` says so).
    Without a name (or with "auto", which only `resolve_metrics` can decide, knowing the target),
    the settings are kept and recorded as the protocol they equal, or "custom".
    """
    if metrics.protocol in ("", CUSTOM, AUTO):
        settings = {k: getattr(metrics, k) for k in PROTOCOL_SETTINGS}
    else:
        default = MetricsSpec()
        own = {k: getattr(metrics, k) for k in PROTOCOL_SETTINGS
               if getattr(metrics, k) != getattr(default, k)}
        settings = {**PROTOCOLS.get(metrics.protocol).settings(), **own}
    return replace(metrics, protocol=matching_protocol(settings), **settings)


def protocol_departures(requested: str, metrics: MetricsSpec) -> list[str]:
    """The settings in which resolved `metrics` depart from the protocol `requested` by name
    (empty when they are that protocol, or none was named)."""
    if requested in ("", CUSTOM) or requested not in PROTOCOLS:
        return []
    fixed = PROTOCOLS.get(requested).settings()
    return [f"metrics.{k} = {getattr(metrics, k)!r} (the protocol has {v!r})"
            for k, v in fixed.items() if getattr(metrics, k) != v]


def requested_protocol(metrics: MetricsSpec, target: TargetSpec) -> str:
    """The protocol `metrics` names, with "auto" decided by the target: "embedded" for a
    ToyFaces domain (the toy network is all the embedded world has), "clean" for images."""
    if metrics.protocol != AUTO:
        return metrics.protocol
    return "embedded" if target.is_toyfaces else "clean"


def resolve_metrics(metrics: MetricsSpec, target: TargetSpec) -> MetricsSpec:
    """`metrics` with its protocol applied (`apply_protocol`) and its "auto" settings decided by
    the target: a ToyFaces target gets the embedded protocol, the toy realism head and the
    ground-truth measures; an image folder the clean protocol and neither."""
    metrics = apply_protocol(replace(metrics, protocol=requested_protocol(metrics, target)))
    changes: dict[str, Any] = {}
    if metrics.realism == AUTO:
        changes["realism"] = "toy" if target.is_toyfaces else "none"
    if metrics.ground_truth == AUTO:
        changes["ground_truth"] = target.is_toyfaces
    return replace(metrics, **changes) if changes else metrics


def check_metrics_fit_target(metrics: MetricsSpec, target: TargetSpec) -> None:
    """Refuse measures an image-folder target cannot give, naming each setting and its fix."""
    if target.is_toyfaces:
        return
    wrong = []
    if metrics.realism == "toy":
        wrong.append('metrics.realism = "toy" (the ToyFaces realism head): set metrics.realism '
                     '= "none" (or "auto"), or train a classifier with `adaptscope realism '
                     'train` and set metrics.realism = "classifier" and '
                     "metrics.realism_classifier = PATH")
    if metrics.ground_truth is True:
        wrong.append("metrics.ground_truth = true (needs known ToyFaces attributes): set "
                     'metrics.ground_truth = false (or "auto")')
    if wrong:
        raise ConfigError(f"target.data = {target.data!r} is an image folder or zip, not a "
                          "ToyFaces domain, so it cannot be measured with "
                          + "; nor with ".join(wrong))


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
    # The sweep variant the run belongs to: the settings that make it, as `ewc.lam=10` (None:
    # not part of a sweep, and left out of config.toml, so older run folders read the same).
    variant: str | None = None

    def __post_init__(self) -> None:
        _check_seed("seed", self.seed)
        _check(self.threads >= 1, "threads", self.threads, "threads >= 1")
        self.metrics = resolve_metrics(self.metrics, self.target)

    @property
    def run_id(self) -> str:
        return _slug(f"{self.experiment}-{self.target.label}-{self.method}"
                     f"{_variant_slug(self.variant)}-s{self.seed}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


EXECUTORS = ("local", "slurm")


@dataclass
class ExecutorSpec:
    """Where an experiment's runs execute. Not part of any run: a run gives the same rows
    wherever it runs, so run folders do not record it."""

    kind: str = "local"  # "local": one process per run here; "slurm": one job array
    partition: str = ""  # SLURM settings (empty / 0: the cluster's default)
    account: str = ""
    qos: str = ""
    time_min: int = 1440  # per job; a run that times out is requeued and resumes
    cpus_per_run: int = 1
    mem_gb: float = 0.0
    gpus_per_run: int = 0
    max_parallel: int = 0  # jobs of the array running at once (0: no limit)
    sbatch: list[str] = field(default_factory=list)  # extra options, e.g. "--constraint=a100"
    log_folder: str = "slurm-logs"  # inside --out: each job's stdout and stderr

    def __post_init__(self) -> None:
        _check(self.kind in EXECUTORS, "executor.kind", self.kind,
               "one of " + ", ".join(f'"{c}"' for c in EXECUTORS))
        _check(self.time_min >= 1, "executor.time_min", self.time_min, ">= 1 (minutes)")
        for key in ("gpus_per_run", "max_parallel"):
            _check(getattr(self, key) >= 0, f"executor.{key}", getattr(self, key), ">= 0")
        _check(self.cpus_per_run >= 1, "executor.cpus_per_run", self.cpus_per_run, ">= 1")
        _check(self.mem_gb >= 0, "executor.mem_gb", self.mem_gb, ">= 0 (0: the default)")
        for option in self.sbatch:
            _check(option.startswith("--") and "=" in option, "executor.sbatch", option,
                   'options written as "--name=value"')
        _check(bool(self.log_folder) and not Path(self.log_folder).is_absolute(),
               "executor.log_folder", self.log_folder, "a folder name relative to --out")


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
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per method, the shared sections' settings its runs change (`[rick.train] batch = 4`):
    # section name -> {setting: value}; applied by `adaptscope.train.experiment.run_specs`.
    method_sections: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # A sweep: the `[grid]` table(s), each {dotted setting: values}, whose product makes the
    # variants (`adaptscope.train.sweep`); `variant` labels the runs of one variant.
    grid: list[dict[str, list[Any]]] = field(default_factory=list)
    variant: str | None = None

    def __post_init__(self) -> None:
        _check(self.threads >= 1, "threads", self.threads, "threads >= 1")
        _check(self.workers >= 0, "workers", self.workers, "workers >= 0 (0: one per CPU core)")
        for seed in self.seeds:
            _check_seed("seeds", seed)

    def runs(self) -> list[RunSpec]:
        return [self.spec_for(m, s) for m in self.methods for s in self.seeds]

    def spec_for(self, method: str, seed: int) -> RunSpec:
        """The run of `method` (a registered name, or a label for a run trained elsewhere)."""
        return RunSpec(experiment=self.name, method=method, seed=seed, source=self.source,
                       target=self.target, schedule=self.schedule, train=self.train,
                       metrics=self.metrics, method_params=dict(self.method_params.get(method, {})),
                       plugins=list(self.plugins), device=self.device, threads=self.threads,
                       variant=self.variant)


# A variant longer than this is cut and followed by a digest of the whole label, so a sweep of
# several long settings still makes folder names a file system takes (255 bytes at most).
VARIANT_SLUG_MAX = 96


def _variant_slug(variant: str | None) -> str:
    """`-ewc.lam-10` for variant `ewc.lam=10`; '' outside a sweep."""
    if not variant:
        return ""
    text = _slug(variant)
    if len(text) > VARIANT_SLUG_MAX:
        digest = hashlib.sha256(variant.encode()).hexdigest()[:10]
        text = f"{text[:VARIANT_SLUG_MAX - 11]}-{digest}"
    return f"-{text}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def default_config_path() -> Path:
    """The embedded default experiment shipped with the package."""
    return asset("embedded-default.toml")


def spec_from_dict(data: dict[str, Any], where: str = "run config") -> RunSpec:
    """Rebuild a RunSpec from its `to_dict()` form (a run directory's config.toml, named in
    errors as `where`)."""
    return from_dict(RunSpec, data, where)


def source_checkpoint_path(source: SourceSpec) -> Path:
    """The file (or diffusers folder) the source model is read from ("toy" names the shipped
    toy StyleGAN2, "toy-diffusion" the shipped toy diffusion model)."""
    if source.checkpoint == EMBEDDED_SOURCE:
        return asset("toy_source.pt")
    if source.checkpoint == TOY_DIFFUSION_SOURCE:
        return asset("toy_diffusion.pt")
    return Path(source.checkpoint)


def embedded_source_family(source: SourceSpec) -> str | None:
    """The generator family of a shipped source ("gan", "diffusion"); None for a user's file,
    whose family is known once it is read."""
    return {EMBEDDED_SOURCE: "gan", TOY_DIFFUSION_SOURCE: "diffusion"}.get(source.checkpoint)


def family_mismatch(method: str, family: str, checkpoint: str, found: str) -> ConfigError:
    """The one-line refusal of a method adapting a source of the other generator family."""
    kinds = {"gan": "a GAN (StyleGAN2)", "diffusion": "a diffusion model"}
    fix = ("toy-diffusion" if family == "diffusion" else "toy")
    return ConfigError(
        f"method {method!r} adapts {kinds[family]}, but source.checkpoint = {checkpoint!r} is "
        f"{kinds[found]}: set source.checkpoint to a {family} source (the shipped one is "
        f"{fix!r}) or choose a {found} method (`adaptscope methods` lists them by family)")
