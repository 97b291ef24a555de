"""Calibrating EWC's lambda on a model by short probe runs (`adaptscope calibrate ewc`).

EWC's lambda multiplies a sum of Fisher-weighted squared drifts over every generator parameter,
so the lambda that gives the paper's behaviour changes by orders of magnitude between models
(see `adaptscope.methods.ewc`): on the embedded world only the decade 10-100 adapts like the
paper's EWC (`reports/ewc-calibration/`), and the FFHQ configs' 5e8 is unmeasured. A probe is a
real run of the shared loop (`run_adaptation`), short and lightly measured: lambda 0 (TGAN with
EWC's Fisher estimate drawn first) as the reference, then each lambda of a log grid, each on the
same seed, so the probes share their batches and their evaluation latents.

The rule (`choose`) comes from that report: the paper's EWC reaches realism near TGAN's, and on
the toy model that held where the penalty's gradient on G was 0.2-3 times the adversarial
term's (lambda 10: 0.25, lambda 100: 2.6), while at 29 (lambda 1e3) realism no longer
converged. Of the lambdas whose ratio lies in RATIO_RANGE and whose realism at the probe's end
is not far behind lambda 0's, the largest is chosen: it holds on to the source most while
still adapting.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adaptscope.config import from_dict
from adaptscope.errors import ConfigError
from adaptscope.methods import get_method
from adaptscope.protocols import CUSTOM
from adaptscope.spec import RunSpec, ScheduleSpec
from adaptscope.track.store import load_trajectories
from adaptscope.train.experiment import load_experiment, run_specs
from adaptscope.train.loop import run_adaptation
from adaptscope.train.preflight import check_before_writing
from adaptscope.train.runner import PlannedRun, plan

# The rule's numbers, from reports/ewc-calibration/ (three seeds of the embedded world).
RATIO_RANGE = (0.2, 3.0)  # penalty / adversarial gradient norm on G where realism converged
PT_FRACTION = 0.5  # realism at the probe's end: at least this share of lambda 0's ...
PT_SLACK = 0.05  # ... less this, about one standard error of a p_t on 50-200 samples
PT_RISEN = 2 * PT_SLACK / PT_FRACTION  # below this lambda 0's p_t cannot rank the lambdas

# 200 iterations: p_t of the embedded world starts to rise at about 300 (the report's curves),
# so at this length the gradient ratio decides there; the six default probes take a few
# minutes on one CPU core. A longer probe (--iterations) lets realism check the choice too.
DEFAULT_ITERATIONS = 200
GRID_DECADES = (-2, -1, 0, 1, 2)  # the default grid: the config's lambda times 10**k
PROBE_SAMPLES = 200  # samples of a probe's evaluations (fewer where the config draws fewer)

EventFn = Callable[[float, dict[str, Any]], None]


@dataclass
class Probe:
    """One probe's result: its lambda, the penalty-to-adversarial gradient ratio (mean norms
    over the probe's second half) and p_t at its last iteration."""

    lam: float
    ratio: float = math.nan
    p_t: float = math.nan
    error: str = ""  # why the probe failed, if it did


@dataclass
class Choice:
    """The lambda the rule chose (None when no lambda meets it), each probe's verdict, and
    notes on how far the numbers can be trusted."""

    lam: float | None
    verdicts: dict[float, str]
    notes: list[str] = field(default_factory=list)


def rule_text() -> str:
    """The rule `choose` applies, in words."""
    lo, hi = RATIO_RANGE
    return (f"the largest lambda whose EWC / adversarial gradient ratio (mean over the probe's "
            f"second half) lies in [{lo:g}, {hi:g}] and whose p_t at the probe's end is at "
            f"least {PT_FRACTION:.0%} of lambda 0's less {PT_SLACK:g} (realism rises near "
            "TGAN's), as reports/ewc-calibration/ found on the embedded world")


def choose(probes: Sequence[Probe]) -> Choice:
    """Apply the rule to the probes; the one with lambda 0 is the reference."""
    reference = next((p for p in probes if p.lam == 0 and not p.error), None)
    if reference is None:
        raise ValueError("the rule needs a finished probe at lambda 0, its reference")
    lo, hi = RATIO_RANGE
    ref_pt = reference.p_t
    pt_floor = PT_FRACTION * ref_pt - PT_SLACK if math.isfinite(ref_pt) else -math.inf
    verdicts: dict[float, str] = {}
    passing = []
    for p in sorted(probes, key=lambda p: p.lam):
        if p is reference or p.lam == 0:
            verdicts[p.lam] = "reference (TGAN)"
        elif p.error:
            verdicts[p.lam] = "failed"
        elif not p.ratio >= lo:  # NaN fails too
            verdicts[p.lam] = f"ratio < {lo:g} (penalty weak)"
        elif p.ratio > hi:
            verdicts[p.lam] = f"ratio > {hi:g} (penalty dominates)"
        elif math.isfinite(p.p_t) and p.p_t < pt_floor:
            verdicts[p.lam] = f"p_t < {max(pt_floor, 0):.2f} (lags lambda 0)"
        else:
            verdicts[p.lam] = "meets the rule"
            passing.append(p.lam)
    chosen = max(passing) if passing else None
    if chosen is not None:
        verdicts[chosen] = "chosen"
    return Choice(chosen, verdicts, _notes(probes, ref_pt, chosen))


def _notes(probes: Sequence[Probe], ref_pt: float, chosen: float | None) -> list[str]:
    """What the reader must know beside the choice: an unmeasured or not yet risen p_t, and
    where to look next when nothing qualifies."""
    notes = []
    if not math.isfinite(ref_pt):
        notes.append("p_t was not measured (metrics.realism = none), so the gradient ratio "
                     "alone decides; a realism classifier lets realism check the choice")
    elif ref_pt < PT_RISEN:
        notes.append(f"lambda 0's p_t at the probe's end is {ref_pt:.2f} (below {PT_RISEN:g}): "
                     "realism has barely begun to rise, so p_t hardly ranks the lambdas and the "
                     "gradient ratio decides; a longer probe (--iterations) lets realism check "
                     "the choice")
    if chosen is None:
        ok = [p for p in probes if p.lam > 0 and not p.error and math.isfinite(p.ratio)
              and p.ratio > 0]
        if ok and all(p.ratio < RATIO_RANGE[0] for p in ok):
            top = max(ok, key=lambda p: p.lam)
            notes.append("every ratio is below the range: try larger lambdas, around "
                         f"{_suggest(top.lam / top.ratio)} (the ratio grows about in "
                         "proportion to lambda while the penalty is weak)")
        elif ok and all(p.ratio > RATIO_RANGE[1] for p in ok):
            low = min(ok, key=lambda p: p.lam)
            notes.append("every ratio is above the range: try smaller lambdas, around "
                         f"{_suggest(low.lam / low.ratio)}")
        else:
            notes.append("no lambda meets the rule: see each row's verdict"
                         + _between(ok))
    return notes


def _between(probes: Sequence[Probe]) -> str:
    """A finer grid between the last lambda whose ratio is below the range and the next one
    above it, where there are such lambdas."""
    below = [p.lam for p in probes if p.ratio < RATIO_RANGE[0]]
    above = [p.lam for p in probes if p.ratio > RATIO_RANGE[1]]
    if not below or not above or max(below) > min(above):
        return ""
    a, b = max(below), min(above)
    points = [float(f"{a * (b / a) ** (i / 4):.1g}") for i in (1, 2, 3)]
    return (f"; try a finer grid between {lam_label(a)} and {lam_label(b)}, e.g. --lambdas "
            + ",".join(lam_label(v) for v in sorted(set(points))))


def _suggest(centre: float) -> str:
    """A --lambdas value: a log grid of five decades around `centre` (one significant digit)."""
    return "--lambdas " + ",".join(lam_label(v) for v in log_grid(float(f"{centre:.1g}")))


def log_grid(centre: float) -> list[float]:
    """`centre` times 10**k for k in GRID_DECADES."""
    return [float(f"{centre * 10.0 ** k if k >= 0 else centre / 10.0 ** -k:.12g}")
            for k in GRID_DECADES]


def lam_label(lam: float) -> str:
    """100 -> '100', 1000 -> '1e3', 5e8 -> '5e8': short, and safe in a folder name."""
    if lam == 0 or 1e-3 <= abs(lam) < 1e3:
        return f"{lam:g}"
    mantissa, exponent = f"{lam:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def parse_lambdas(text: str) -> list[float]:
    """'1,10,1e3' -> [1.0, 10.0, 1000.0]; a bad value is a ConfigError naming it."""
    values = []
    for item in (v.strip() for v in text.split(",")):
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"--lambdas: {item!r} is not a lambda; give comma-separated "
                              "numbers >= 0, e.g. --lambdas 1,10,100,1e3,1e4")
        values.append(value)
    if not any(v > 0 for v in values):
        raise ConfigError(f"--lambdas {text!r} names no lambda above 0 (lambda 0, the "
                          "reference, is always probed)")
    return sorted(set(values))


def probe_spec(spec: RunSpec, lam: float, iterations: int) -> RunSpec:
    """The EWC run `spec` as a probe of `lam`: `iterations` long, evaluated at its start, its
    middle (cheap, so the last row's gradient means cover the second half) and its end, on at
    most PROBE_SAMPLES samples and without ground truth; the protocol is then recorded as
    custom, as for any run that departs from its own. Its variant is its lambda, so
    `adaptscope report` on the probes' folder shows each lambda on its own."""
    m = spec.metrics
    n = min(PROBE_SAMPLES, m.fid_n_gen)
    metrics = replace(m, protocol=CUSTOM, fid_n_gen=n, lpips_n_samples=min(n, m.lpips_n_samples),
                      cheap_n_samples=min(n, m.cheap_n_samples), ground_truth=False)
    schedule = ScheduleSpec(iterations=iterations, eval_every=iterations,
                            cheap_every=(iterations + 1) // 2)
    return replace(spec, experiment=f"{spec.experiment}-calibrate-ewc",
                   variant=f"ewc.lam={lam_label(lam)}",  # a sweep of lambda: reported so
                   schedule=schedule, metrics=metrics,
                   method_params={**spec.method_params, "lam": float(lam)})


def read_probe(run_dir: Path, lam: float, iterations: int) -> Probe:
    """The probe's numbers from its trajectory: its last row's gradient means (the second
    half's) and p_t."""
    df = load_trajectories(run_dir)
    last = df[df["iteration"] == iterations].iloc[-1]

    def value(column: str) -> float:
        return math.nan if column not in last or pd.isna(last[column]) else float(last[column])

    ewc, adv = value("grad_norm_ewc"), value("grad_norm_g_adv")
    return Probe(lam=lam, ratio=ewc / adv if adv > 0 else math.nan, p_t=value("realism_pt"))


def plan_probes(config: Path | None, overrides: list[str], lambdas: Sequence[float] | None,
                iterations: int, seed: int, out: Path) -> tuple[list[PlannedRun], Any]:
    """The probes of lambda 0 and each of `lambdas` (default: the config's lambda times
    10**GRID_DECADES) as planned runs under `out`, and the loaded experiment. A finished probe
    with the same settings is kept (status "complete") and an unfinished one resumes; one with
    other settings is refused."""
    if iterations < 2:
        raise ConfigError(f"--iterations {iterations}: a probe needs at least 2 iterations (its "
                          "gradient ratio is read over the second half)")
    cfg = load_experiment(config, overrides, values={"methods": ["ewc"], "seeds": [seed]})
    (base,) = run_specs(cfg)
    if lambdas is None:
        lam = from_dict(get_method("ewc").Params, base.method_params, "[ewc]").lam
        if not lam > 0:
            raise ConfigError(f"[ewc] lam = {lam!r}: give a lambda above 0 to centre the grid "
                              "on, or the grid itself with --lambdas")
        lambdas = log_grid(lam)
    specs = [probe_spec(base, lam, iterations)
             for lam in [0.0, *sorted({float(v) for v in lambdas if v > 0})]]
    return plan(specs, out, continue_unfinished=True), cfg


def run_probes(planned: Sequence[PlannedRun], on_event: EventFn) -> list[Probe]:
    """Run the pending probes one after another (a finished one is read, not run again); a
    probe that fails is recorded as failed and the others still run."""
    probes = []
    for run in planned:
        lam = float(run.spec.method_params["lam"])
        iterations = run.spec.schedule.iterations
        if run.status != "complete":
            try:
                run_adaptation(run.spec, run.run_dir, lambda e, lam=lam: on_event(lam, e))
                run.status = "done"
            except Exception as err:  # one failed probe must not stop the others
                run.status, run.error = "failed", f"{type(err).__name__}: {err}"
                probes.append(Probe(lam=lam, error=run.error))
                continue
        on_event(lam, {"kind": "done", "iteration": iterations, "total": iterations})
        probes.append(read_probe(run.run_dir, lam, iterations))
    return probes


@contextlib.contextmanager
def _probe_folder(out: Path | None) -> Iterator[Path]:
    """`out`, or a temporary folder removed afterwards."""
    if out is not None:
        yield out
        return
    with tempfile.TemporaryDirectory(prefix="adaptscope-calibrate-ewc-") as tmp:
        yield Path(tmp)


def calibrate_ewc(config: Path | None = None, overrides: Sequence[str] = (),
                  lambdas: Sequence[float] | None = None, iterations: int | None = None,
                  seed: int = 0, out: Path | None = None,
                  console: Console | None = None) -> tuple[Choice | None, list[Probe]]:
    """Probe lambda 0 and each lambda, print a row per lambda and the lambda the rule chooses.

    `iterations` per probe, DEFAULT_ITERATIONS when None. Returns the choice (None when the
    reference probe failed) and the probes. `out` keeps the
    probe runs (a later call reuses the finished ones); without it they go to a temporary
    folder.
    """
    console = console or Console(emoji=False, highlight=False)
    iterations = DEFAULT_ITERATIONS if iterations is None else iterations
    t0 = time.perf_counter()
    with _probe_folder(out) as folder:
        planned, cfg = plan_probes(config, list(overrides), lambdas, iterations, seed, folder)
        check_before_writing([r for r in planned if r.status != "complete"], folder)
        console.print(f"calibrating ewc.lam for {escape(cfg.name)}: {len(planned)} probes of "
                      f"{iterations} iterations (seed {seed}, device {escape(cfg.device)})"
                      + (f", kept in {escape(str(out))}" if out is not None else "")
                      + _reused(planned))
        with _progress(console, planned) as on_event:
            probes = run_probes(planned, on_event)
    wall = time.perf_counter() - t0
    for run in planned:
        if run.status == "failed":
            console.print(f"[red]lambda {lam_label(run.spec.method_params['lam'])} failed:[/red] "
                          f"{escape(run.error)}")
    choice = None
    if any(p.lam == 0 and not p.error for p in probes):
        choice = choose(probes)
    print_result(console, probes, choice, iterations, config, wall)
    return choice, probes


def _reused(planned: Sequence[PlannedRun]) -> str:
    n = sum(r.status == "complete" for r in planned)
    return f" ({n} finished before, read again)" if n else ""


@contextlib.contextmanager
def _progress(console: Console, planned: Sequence[PlannedRun]) -> Iterator[EventFn]:
    """A progress bar per probe, fed by the loop's events."""
    columns = (TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[latest]}"))
    with Progress(*columns, console=console) as progress:
        tasks = {float(r.spec.method_params["lam"]): progress.add_task(
            f"lambda {lam_label(r.spec.method_params['lam'])}",
            total=r.spec.schedule.iterations, latest="waiting") for r in planned}

        def on_event(lam: float, event: dict[str, Any]) -> None:
            fields: dict[str, Any] = {"completed": event.get("iteration", 0)}
            metrics = event.get("metrics") or {}
            if event["kind"] == "start":
                fields["latest"] = "training"
            elif "realism_pt" in metrics:
                fields["latest"] = f"p_t {metrics['realism_pt']:.2f}"
            elif event["kind"] == "done":
                fields["latest"] = "done"
            progress.update(tasks[lam], **fields)

        yield on_event


def print_result(console: Console, probes: Sequence[Probe], choice: Choice | None,
                 iterations: int, config: Path | None, wall_s: float) -> None:
    """The table (a row per lambda), the rule, the choice and where to write it."""
    table = Table(title=f"EWC lambda probes ({iterations} iterations each)")
    for col in ("lambda", "EWC / adv gradient", "p_t at end", "verdict"):
        table.add_column(col)
    verdicts = choice.verdicts if choice is not None else {}
    for p in sorted(probes, key=lambda p: p.lam):
        ratio = "-" if p.lam == 0 else _number(p.ratio)
        table.add_row(lam_label(p.lam), ratio, _number(p.p_t, ".3f"),
                      escape(verdicts.get(p.lam, "failed" if p.error else "")))
    console.print(table)
    console.print(f"rule: {escape(rule_text())}")
    if choice is None:
        console.print("chosen: none (the reference probe, lambda 0, failed)")
    else:
        for note in choice.notes:
            console.print(f"note: {escape(note)}")
        if choice.lam is None:
            console.print("chosen: none")
        else:
            where = escape(str(config)) if config is not None else "your experiment TOML"
            console.print(f"chosen: ewc.lam = {lam_label(choice.lam)}: write `lam = "
                          f"{choice.lam:g}` under {escape('[ewc]')} in {where} (or run with "
                          f"--set ewc.lam={choice.lam:g})")
    console.print(f"wall time: {wall_s:.0f} s")


def _number(value: float, fmt: str = ".3g") -> str:
    return "-" if not math.isfinite(value) else format(value, fmt)
