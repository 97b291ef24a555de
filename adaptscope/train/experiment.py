"""Loading an experiment: its TOML, `--set` overrides, plugins, and checked method settings.

Everything is checked here, before any run exists: unknown keys, values of the wrong type or out
of range, an unknown method, a method hyperparameter it does not have, a measure the target
cannot give. The metrics settings left "auto" are decided by the target here, so every RunSpec
(and every run folder's config.toml) holds what actually runs. A run folder's config.toml is
read back here too, and trusted only whole and as its trajectory recorded it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from adaptscope.config import (
    apply_overrides,
    coerce,
    from_dict,
    missing_settings,
    read_toml,
    set_values,
    to_dict,
)
from adaptscope.errors import ConfigError, PluginError
from adaptscope.methods import METHODS, Method, get_method
from adaptscope.methods.plugins import import_plugins, resolve_plugin
from adaptscope.spec import (
    ExperimentConfig,
    RunSpec,
    check_metrics_fit_target,
    default_config_path,
    embedded_source_family,
    family_mismatch,
    protocol_departures,
    requested_protocol,
    resolve_metrics,
    spec_from_dict,
)
from adaptscope.track.rundir import RunDir, config_differences
from adaptscope.track.store import read_metadata
from adaptscope.train.sweep import parse_grid_options, parse_grid_table, sweep_configs


def _load_plugins(data: dict[str, Any], extra: list[str], where: str) -> None:
    """Import the experiment's plugins (plus `extra`) and store them resolved in `data`."""
    refs = data.get("plugins", [])
    try:
        refs = coerce(refs, list[str], f"{where}: plugins")
    except ConfigError as err:
        raise ConfigError(f"{where}: plugins must be a list of module names or .py paths, "
                          f"got {refs!r}") from err
    own, refs = refs, list(dict.fromkeys([*refs, *extra]))
    if not refs:
        return
    resolved = []
    for ref in refs:  # an error names the config file only for the plugins it lists
        try:
            resolved.append(resolve_plugin(ref))
            import_plugins(resolved[-1:])
        except PluginError as err:
            raise ConfigError(f"{where}: {err}" if ref in own else str(err)) from err
    data["plugins"] = resolved


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None,
                    plugins: list[str] | None = None,
                    values: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read an experiment TOML (the embedded default when None) and apply `key=value` overrides
    (`--set` text) and then `values` (typed values by dotted key, from the CLI's own options).

    Method hyperparameters live in a table named after the method (`[dcl]`, `--set dcl.tau=0.1`).
    `plugins` are added to the experiment's own before its methods are looked up.
    """
    source = Path(path) if path is not None else default_config_path()
    data = apply_overrides(read_toml(source), overrides or [])
    if values:
        data = set_values(data, values)
    _load_plugins(data, plugins or [], str(source))
    grid = data.pop("grid", None)
    method_params = {k: data.pop(k) for k in list(data) if k in METHODS}
    sections = {name: {key: table.pop(key) for key in METHOD_SECTIONS
                       if isinstance(table, dict) and isinstance(table.get(key), dict)}
                for name, table in method_params.items()}
    cfg = from_dict(ExperimentConfig, data, str(source))
    cfg.grid = [] if grid is None else parse_grid_table(grid, str(source))
    cfg.method_sections = {name: _typed_sections(cfg, name, given, source)
                           for name, given in sections.items() if given}
    for name in cfg.methods:
        params = method_params.get(name, {})
        parsed = from_dict(get_method(name).Params, params, f"{source}: [{name}]")
        method_params[name] = {k: getattr(parsed, k) for k in params}  # typed, only those given
    for name in set(method_params) - set(cfg.methods):  # tables of methods not run now
        method_params[name] = coerce(method_params[name], dict[str, Any], f"{source}: [{name}]")
    cfg.method_params = method_params
    check_metrics_fit_target(cfg.metrics, cfg.target)
    requested = requested_protocol(cfg.metrics, cfg.target)
    cfg.metrics = resolve_metrics(cfg.metrics, cfg.target)
    # Not a setting: what the command line tells the user about the protocol it records.
    cfg.requested_protocol = requested
    cfg.protocol_departures = protocol_departures(requested, cfg.metrics)
    return cfg


def load_sweep(path: str | Path | None = None, overrides: list[str] | None = None,
               plugins: list[str] | None = None, values: dict[str, Any] | None = None,
               grid: list[str] | None = None) -> list[ExperimentConfig]:
    """The experiment as `load_experiment` reads it, one config per variant of its sweep: the
    `--grid` options' (`grid`) when given, else the TOML's `[grid]` (none: the experiment
    alone). Each variant's settings are applied after the `--set` overrides and checked as
    they are."""
    base = load_experiment(path, overrides, plugins, values)
    grids = parse_grid_options(grid) if grid else base.grid

    def variant(settings: dict[str, Any]) -> ExperimentConfig:
        return load_experiment(path, overrides, plugins, {**(values or {}), **settings})

    return sweep_configs(base, grids, variant)


# Sub-tables of a method's table that change the shared settings for that method's runs only:
# `[rick.train] batch = 4`, `[adam.schedule] iterations = 1250` (`--set rick.train.batch=4`).
METHOD_SECTIONS: tuple[str, ...] = ("train", "schedule")


def _typed_sections(cfg: ExperimentConfig, name: str, given: dict[str, dict[str, Any]],
                    source: Path) -> dict[str, dict[str, Any]]:
    """A method's `train` / `schedule` sub-tables, checked and typed against the experiment's
    own sections (an unknown key or a bad value names `[method.section]`)."""
    typed = {}
    for key, values in given.items():
        base = getattr(cfg, key)
        where = f"[{name}.{key}]"
        try:
            merged = from_dict(type(base), {**to_dict(base), **values}, f"{source}: {where}")
        except ConfigError as err:
            raise ConfigError(str(err) if where in str(err) else f"{where}: {err}") from err
        typed[key] = {k: getattr(merged, k) for k in values}
    return typed


def run_specs(cfg: ExperimentConfig) -> list[RunSpec]:
    """The experiment's runs, each with the loop settings its method fixes (`loop_settings`:
    TGAN+ADA runs with ADA on, RICK at batch 2), then the experiment's own settings for that
    method (`[rick.train]`, `[adam.schedule]`), and `schedule.iterations` of adaptation after
    a first stage that is thrown away (`preliminary_iterations`: AdAM's probing), so every run
    folder's config holds what actually runs."""
    specs = []
    for spec in cfg.runs():
        cls = get_method(spec.method)
        shipped = embedded_source_family(spec.source)
        if shipped is not None and shipped != cls.family:
            raise family_mismatch(spec.method, cls.family, spec.source.checkpoint, shipped)
        sections = cfg.method_sections.get(spec.method, {})
        train = {**cls.loop_settings, **sections.get("train", {})}
        if train:
            spec = replace(spec, train=replace(spec.train, **train))
        schedule = replace(spec.schedule, **sections.get("schedule", {}))
        extra = cls.preliminary_iterations(method_params(spec))
        specs.append(replace(spec, schedule=replace(schedule,
                                                    iterations=schedule.iterations + extra)))
    return specs


def method_class(spec: RunSpec) -> type[Method]:
    """The spec's method, after importing the plugins that may register it (quietly: the
    process that planned the run has named them already)."""
    import_plugins(spec.plugins, announce=False)
    return get_method(spec.method)


def method_params(spec: RunSpec) -> Any:
    """The method's hyperparameter dataclass, filled from the spec."""
    return from_dict(method_class(spec).Params, spec.method_params, f"[{spec.method}]")


def check_run_configs(folders: Iterable[Path]) -> None:
    """The config.toml of each run among `folders` (where there is one): an unfinished run's as
    `recorded_spec` reads it, with its plugins imported, so a missing one stops nothing midway;
    a finished run's only parsed, as it is only read (to be kept or compared), never continued,
    so an older one does not block the others. An error names the file."""
    for path in folders:
        folder = RunDir(path)
        if not folder.config.is_file():
            continue
        if folder.is_done():
            spec_from_dict(read_toml(folder.config), where=str(folder.config))
            continue
        spec = recorded_spec(folder)
        try:
            import_plugins(spec.plugins)
        except PluginError as err:
            raise ConfigError(f"{folder.config}: {err}") from err


def recorded_spec(folder: RunDir) -> RunSpec:
    """The run a folder's config.toml records, refused unless whole and as its trajectory
    recorded it: adaptscope writes every setting, so a missing one (read as its default) or a
    changed one would continue another run than the rows already recorded."""
    path = folder.config
    data = read_toml(path)
    spec = spec_from_dict(data, str(path))
    meta = read_metadata(folder.path) if folder.trajectory.is_file() else {}
    recorded = meta.get("config") if isinstance(meta.get("config"), dict) else None
    missing = missing_settings(type(spec), data)
    if missing:
        raise _missing_settings(folder, missing, recorded, meta)
    if recorded is not None:
        written = json.loads(json.dumps(spec.to_dict(), default=str))  # as the metadata holds it
        changed = config_differences(recorded, written,
                                     (f"recorded in {folder.trajectory.name}", "in config.toml"))
        if changed:
            raise ConfigError(
                f"{path}: {'; '.join(changed[:3])}{_more(changed, 3)}; the file was edited after "
                "the run started, and resuming would continue another run than the one recorded: "
                "restore the recorded values, or start new runs under another --out")
    return spec


_ABSENT = "<absent>"


def _lookup(data: dict[str, Any], key: str) -> Any:
    """The value at dotted `key` in nested `data`, or _ABSENT."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return _ABSENT
        data = data[part]
    return data


def _show(value: Any) -> str:
    return value if value is _ABSENT else json.dumps(value)


def _more(items: list[str], shown: int) -> str:
    return f" (and {len(items) - shown} more)" if len(items) > shown else ""


def _missing_settings(folder: RunDir, missing: list[str], recorded: dict[str, Any] | None,
                      meta: dict[str, Any]) -> ConfigError:
    """Why settings are missing and what to do: restore the recorded values (a file cut short
    or edited), or, where the run's own adaptscope did not have them, start it again."""
    head = f"{folder.config}: missing setting(s) {', '.join(missing[:5])}{_more(missing, 5)}"
    if recorded is None:
        return ConfigError(
            f"{head}; adaptscope writes every setting, so the file was cut short or edited: "
            f"restore it, or delete {folder.path} to start the run again")
    known = {k: v for k in missing if (v := _lookup(recorded, k)) is not _ABSENT}
    if known:
        values = ", ".join(f"{k} = {_show(v)}" for k, v in list(known.items())[:5])
        return ConfigError(
            f"{head}; adaptscope writes every setting, so the file was cut short or edited: "
            f"restore the values {folder.trajectory} recorded ({values}{_more(known, 5)})")
    return ConfigError(
        f"{head}, which the adaptscope {meta.get('version')} that started the run (trajectory "
        f"schema {meta.get('schema')}) did not have; this version would fill in its defaults "
        "and continue another run than the one recorded: finish it with that version, or start "
        "it again under another --out")
