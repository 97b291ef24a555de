"""Loading an experiment: its TOML, `--set` overrides, plugins, and checked method settings.

Everything is checked here, before any run exists: unknown keys, values of the wrong type or out
of range, an unknown method, a method hyperparameter it does not have, a measure the target
cannot give. The metrics settings left "auto" are decided by the target here, so every RunSpec
(and every run folder's config.toml) holds what actually runs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from adaptscope.config import apply_overrides, coerce, from_dict, read_toml, set_values
from adaptscope.errors import ConfigError, PluginError
from adaptscope.methods import METHODS, Method, get_method
from adaptscope.methods.plugins import import_plugins, resolve_plugin
from adaptscope.spec import (
    ExperimentConfig,
    RunSpec,
    check_metrics_fit_target,
    default_config_path,
    protocol_departures,
    resolve_metrics,
)


def _load_plugins(data: dict[str, Any], extra: list[str], where: str) -> None:
    """Import the experiment's plugins (plus `extra`) and store them resolved in `data`."""
    refs = data.get("plugins", [])
    try:
        refs = coerce(refs, list[str], f"{where}: plugins")
    except ConfigError as err:
        raise ConfigError(f"{where}: plugins must be a list of module names or .py paths, "
                          f"got {refs!r}") from err
    refs = list(dict.fromkeys([*refs, *extra]))
    if not refs:
        return
    try:
        data["plugins"] = [resolve_plugin(r) for r in refs]
        import_plugins(data["plugins"])
    except PluginError as err:
        raise ConfigError(f"{where}: {err}") from err


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
    method_params = {k: data.pop(k) for k in list(data) if k in METHODS}
    cfg = from_dict(ExperimentConfig, data, str(source))
    for name in cfg.methods:
        params = method_params.get(name, {})
        parsed = from_dict(get_method(name).Params, params, f"{source}: [{name}]")
        method_params[name] = {k: getattr(parsed, k) for k in params}  # typed, only those given
    for name in set(method_params) - set(cfg.methods):  # tables of methods not run now
        method_params[name] = coerce(method_params[name], dict[str, Any], f"{source}: [{name}]")
    cfg.method_params = method_params
    check_metrics_fit_target(cfg.metrics, cfg.target)
    requested = cfg.metrics.protocol
    cfg.metrics = resolve_metrics(cfg.metrics, cfg.target)
    # Not a setting: what the command line tells the user about the protocol it records.
    cfg.requested_protocol = requested
    cfg.protocol_departures = protocol_departures(requested, cfg.metrics)
    return cfg


def run_specs(cfg: ExperimentConfig) -> list[RunSpec]:
    """The experiment's runs, each with the loop settings its method fixes (`loop_settings`:
    TGAN+ADA runs with ADA on), so every run folder's config holds what actually runs."""
    specs = []
    for spec in cfg.runs():
        settings = get_method(spec.method).loop_settings
        if settings:
            spec = replace(spec, train=replace(spec.train, **settings))
        specs.append(spec)
    return specs


def method_class(spec: RunSpec) -> type[Method]:
    """The spec's method, after importing the plugins that may register it."""
    import_plugins(spec.plugins)
    return get_method(spec.method)


def method_params(spec: RunSpec) -> Any:
    """The method's hyperparameter dataclass, filled from the spec."""
    return from_dict(method_class(spec).Params, spec.method_params, f"[{spec.method}]")
