"""Sweeps: a `[grid]` table (or `--grid KEY=V1,V2`) expanded into variants of one experiment.

A grid maps dotted settings to lists of values; its variants are the product of those lists.
Several grids (`[[grid]]` tables, or the TOML's grid replaced by the command line's) add their
variants up, so a sweep that is not a full product (DCL's block-output features only with the
default scheme) is written as two grids. A setting inside a method's table (`ewc.lam`) makes
variants of that method's runs only; the other methods run once, as the experiment has them, so
`--methods tgan,ewc --grid ewc.lam=10,100` is two EWC variants beside one TGAN baseline. Each
variant's runs carry its label (`ewc.lam=10`) in their run id and `variant` column.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from adaptscope.config import RawValue
from adaptscope.errors import ConfigError
from adaptscope.methods import METHODS
from adaptscope.spec import ExperimentConfig

Grid = dict[str, list[Any]]

# What a sweep cannot vary: the runs' identity and placement have their own options.
NOT_SWEPT: dict[str, str] = {
    "name": "it names the whole study",
    "methods": "give the methods with --methods",
    "seeds": "give the seeds with --seeds",
    "plugins": "give plugins with --plugin",
    "device": "a run gives the same rows wherever it runs",
    "threads": "a run gives the same rows with any thread count",
    "workers": "it only places the runs",
    "executor": "it only places the runs",
    "grid": "a grid cannot hold another",
}


def parse_grid_options(items: list[str]) -> Grid:
    """`--grid ewc.lam=10,100` options (repeatable: one grid, their product), values kept as
    text for the setting they land in to type."""
    grid: Grid = {}
    for item in items:
        key, sep, text = item.partition("=")
        values = [v.strip() for v in text.split(",")]
        if not sep or not key.strip() or not all(values):
            raise ConfigError(f"--grid {item!r}: give KEY=V1,V2,... (a setting and its "
                              "comma-separated values), e.g. --grid ewc.lam=10,100,1000")
        key = key.strip()
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice; list all its values in one option")
        grid[key] = [RawValue(v, f"--grid {item}") for v in values]
    return [grid] if grid else []


def parse_grid_table(value: Any, where: str) -> list[Grid]:
    """The TOML's `grid`: one table (`[grid]`) or several (`[[grid]]`), each nested tables of
    value lists (`[grid.ewc] lam = [10.0, 100.0]`) or dotted keys (`"ewc.lam" = [...]`)."""
    tables = value if isinstance(value, list) else [value]
    grids = []
    for i, table in enumerate(tables):
        at = f"{where}: [grid]" if not isinstance(value, list) else f"{where}: [[grid]] #{i + 1}"
        if not isinstance(table, dict) or not table:
            raise ConfigError(f"{at}: give a table of settings, each with a list of values, e.g. "
                              "[grid] followed by ewc.lam = [10.0, 100.0]")
        grids.append(_flatten(table, "", at))
    return grids


def _flatten(table: Mapping[str, Any], prefix: str, where: str) -> Grid:
    grid: Grid = {}
    for name, values in table.items():
        key = f"{prefix}{name}"
        if isinstance(values, dict):
            grid.update(_flatten(values, f"{key}.", where))
        elif isinstance(values, list) and values:
            grid[key] = list(values)
        else:
            raise ConfigError(f"{where}: {key} = {values!r}: give a non-empty list of the "
                              f"values to sweep, e.g. {key} = [{values!r}]")
    return grid


def value_text(value: Any) -> str:
    """A grid value as its variant label writes it (`true`, `10.0`, `generator`)."""
    if isinstance(value, RawValue):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check_grids(grids: list[Grid], methods: list[str]) -> None:
    """Refuse a grid that cannot make variants: a setting of a method the experiment does not
    run, a run's identity or placement, a value listed twice."""
    for grid in grids:
        for key, values in grid.items():
            head = key.split(".")[0]
            if head in NOT_SWEPT:
                raise ConfigError(f"grid setting {key!r} cannot be swept: {NOT_SWEPT[head]}")
            if head in METHODS and head not in methods:
                raise ConfigError(f"grid setting {key!r} is {head}'s, which the experiment does "
                                  f"not run (methods: {', '.join(methods)}); add it to the "
                                  "methods or drop the setting")
            texts = [value_text(v) for v in values]
            twice = sorted({t for t in texts if texts.count(t) > 1})
            if twice:
                raise ConfigError(f"grid setting {key!r} lists {', '.join(twice)} more than "
                                  "once; give each value once")


def variants(grids: list[Grid], methods: list[str]) -> list[tuple[str | None, dict[str, Any],
                                                                  list[str]]]:
    """(label, settings, methods) of every variant, in grid order: a method's variants come
    from the grid settings that concern it (its own table's, or shared ones); a method no
    setting of a grid concerns runs once without a variant (label None, no settings; first)."""
    check_grids(grids, methods)
    found: dict[str | None, tuple[dict[str, Any], list[str]]] = {}
    for grid in grids:
        for method in methods:
            keys = [k for k in grid if _concerns(k, method)]
            for combo in itertools.product(*(grid[k] for k in keys)):
                settings = dict(zip(keys, combo, strict=True))
                label = ", ".join(f"{k}={value_text(v)}" for k, v in settings.items()) or None
                entry = found.setdefault(label, (settings, []))
                if method not in entry[1]:
                    entry[1].append(method)
    ordered = sorted(found.items(), key=lambda item: item[0] is not None)  # the plain runs first
    return [(label, settings, sorted(runs, key=methods.index))
            for label, (settings, runs) in ordered]


def _concerns(key: str, method: str) -> bool:
    """Whether a grid setting changes `method`'s runs: its own table's, or a shared setting."""
    head = key.split(".")[0]
    return head == method or head not in METHODS


def sweep_configs(base: ExperimentConfig, grids: list[Grid],
                  load: Callable[[dict[str, Any]], ExperimentConfig]) -> list[ExperimentConfig]:
    """The experiment's configs, one per variant (`load(settings)` reads the experiment with
    those settings applied, checking them as any setting is checked); `base` alone when there
    is no grid."""
    if not grids:
        return [base]
    configs = []
    for label, settings, methods in variants(grids, base.methods):
        cfg = copy.copy(load(settings) if settings else base)  # keeps what loading noted
        cfg.methods, cfg.variant, cfg.grid = methods, label, []
        configs.append(cfg)
    return configs
