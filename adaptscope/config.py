"""Typed configuration: TOML files and `--set key=value` overrides onto nested dataclasses.

Every setting lives in a dataclass field with a default, so a config file only states what
differs, an unknown key is an error (a typo never silently falls back to a default), and the
resolved config can be written back to TOML next to the results it produced. A `--set` value is
kept as the text typed until the field it lands in gives it a type, so strings (Windows paths,
quotes, unicode) arrive exactly as typed, and an error about it names the `--set` option.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from adaptscope.errors import ConfigError

__all__ = ["ConfigError", "RawValue", "apply_overrides", "coerce", "dumps_toml", "from_dict",
           "missing_settings", "read_toml", "set_values", "to_dict"]

T = TypeVar("T")

_INT = re.compile(r"[+-]?\d+(_\d+)*")
_FLOAT = re.compile(r"[+-]?(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][+-]?\d+)?")


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        problem = "is a folder, not a TOML file" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {path} {problem}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at "
                          f"offset {err.start}); TOML files are UTF-8: save it as UTF-8") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err


class RawValue:
    """Text given on the command line, kept as typed until the field it lands in gives its type.

    Guessing a type from the text alone (or parsing it as TOML) mangles strings: a Windows path
    or a quote inside a value would be read as escapes or as the end of a string. `option` is
    the `--set key=value` it came from, which errors about it name (not the config file).
    """

    __slots__ = ("option", "text")

    def __init__(self, text: str, option: str = "") -> None:
        self.text = text
        self.option = option

    def __repr__(self) -> str:  # error messages show the value as the user typed it
        return repr(self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawValue) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _unquote(text: str) -> str:
    """Drop one pair of matching quotes around the whole text; nothing else is interpreted."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _scan(text: str) -> typing.Iterator[tuple[int, str, int]]:
    """(index, char, bracket depth after it) of each character outside quotes. A quote opens a
    quoted part only at the start of an item, so an apostrophe inside a word (`it's`) is text."""
    depth, quote, start = 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'" and not text[start:i].strip():
            quote = ch
            continue
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch in ",[":
            start = i + 1
        yield i, ch, depth


def _bracketed(text: str) -> bool:
    """Whether the whole text is one `[...]` list (the first bracket closes at the very end)."""
    if not text.startswith("["):
        return False
    for i, ch, depth in _scan(text):
        if ch == "]" and depth == 0:
            return i == len(text) - 1
    return False


def _split_list(text: str) -> list[str]:
    """`[a, b]` or `a,b` -> item texts, split on commas outside brackets and quotes."""
    if _bracketed(text):
        text = text[1:-1]
    items: list[str] = []
    start = 0
    for i, ch, depth in _scan(text):
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def _guess(text: str) -> Any:
    """A plain value for a field without a declared type: literal if it reads as one, else text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        try:
            return float(text)
        except ValueError:
            pass
    if _bracketed(text):
        return [_guess(item) for item in _split_list(text)]
    return _unquote(text)


def _coerce_raw(raw: RawValue, hint: Any, where: str) -> Any:
    text = raw.text
    where = raw.option or where
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        item = args[0] if args else Any
        out = [_coerce(RawValue(t, raw.option), item, f"{where}[]") for t in _split_list(text)]
        return tuple(out) if origin is tuple else out
    if hint is Any:
        return _guess(text)
    if hint is str:
        return _unquote(text)
    if hint is bool:
        if text.lower() not in ("true", "false"):
            raise ConfigError(f"{where}: expected true or false, got {text!r}")
        return text.lower() == "true"
    if hint is int:
        if not _INT.fullmatch(text):
            raise ConfigError(f"{where}: expected int, got {text!r}")
        return int(text)
    if hint is float:
        return _finite_float(text, where)
    if dataclasses.is_dataclass(hint) or origin is dict:
        raise ConfigError(f"{where}: expected a table, got {text!r}")
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{where}: cannot set a {name} from the command line (got {text!r})")


def _finite_float(value: str | int | float, where: str) -> float:
    """The one place a float setting is parsed (from TOML or `--set`): inf and nan are refused,
    since a setting such as `train.lr = inf` would train on without a word and give NaNs."""
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{where}: expected float, got {value!r}") from None
    except OverflowError:
        raise ConfigError(f"{where}: {value} is too large for a float") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {value!r} is not a finite number; give a finite float")
    return number


def _walk(data: dict[str, Any], key: str, where: str) -> tuple[dict[str, Any], str]:
    """The table that dotted `key` names a slot of (tables created as needed), and the slot."""
    parts = [part.strip() for part in key.split(".")]
    if not all(parts):
        raise ConfigError(f"{where}: {key!r} is not a dotted key such as schedule.iterations")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {part} is not a section")
    return node, parts[-1]


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings to a nested dict (copying, not mutating, the input).

    Each value is stored as a `RawValue`; `from_dict` converts it to the field's declared type.
    """
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        node, name = _walk(data, key, f"--set {item}")
        node[name] = RawValue(value.strip(), f"--set {item}")
    return data


def set_values(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Set already-typed values by dotted key (`{"schedule.iterations": 100}`) on a copy of
    `data`; nothing is parsed, so strings arrive exactly as given."""
    data = copy.deepcopy(data)
    for key, value in values.items():
        node, name = _walk(data, key, f"setting {key}")
        node[name] = copy.deepcopy(value)
    return data


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {hint}")
    if isinstance(value, RawValue):
        return _coerce_raw(value, hint, where)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_dict(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{where}[]") for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, where) for k, v in value.items()}
    if hint is Any:
        return _plain(value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return _finite_float(value, where)
    if hint is int and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if hint is str and isinstance(value, os.PathLike):
        return os.fspath(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    """`value` with every RawValue inside it replaced by its best-guess plain value."""
    if isinstance(value, RawValue):
        return _guess(value.text)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return value


def coerce(value: Any, hint: Any, where: str = "config") -> Any:
    """Check `value` against type `hint` and convert it (a RawValue from `--set` to that type).

    For code that reads a setting from the raw nested dict before `from_dict` builds the config.
    """
    return _coerce(value, hint, where)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a (possibly partial) dict, rejecting unknown keys and naming
    missing required ones."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise _unknown_settings(data, unknown, sorted(names), where)
    required = [f.name for f in dataclasses.fields(cls) if f.init
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"{where}: missing required setting(s) {missing}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _option(value: Any) -> str:
    """The `--set` option that put `value` (or a value inside it) there; empty for file values."""
    if isinstance(value, RawValue):
        return value.option
    if isinstance(value, dict):
        return next((o for o in map(_option, value.values()) if o), "")
    return ""


def _unknown_settings(data: dict[str, Any], unknown: list[str], names: list[str],
                      where: str) -> ConfigError:
    """An unknown key named where it was typed, a `--set` option before the file it would
    otherwise be blamed on, with the closest known key."""
    key = next((k for k in unknown if _option(data[k])), unknown[0])
    option = _option(data[key])
    close = difflib.get_close_matches(key, names, n=1)
    if not option:
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ConfigError(f"{where}: unknown setting(s) {unknown}{hint}; known: {names}")
    parts = [p.strip() for p in option.removeprefix("--set ").split("=", 1)[0].split(".")]
    hint = ""
    if close and key in parts:
        i = parts.index(key)
        hint = f" (did you mean {'.'.join([*parts[:i], close[0], *parts[i + 1:]])}?)"
    return ConfigError(f"{option}: unknown setting(s) [{key!r}]{hint}; known: {names}")


def missing_settings(cls: type, data: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of `cls`'s settings that `data` lacks, nested tables included. A file that
    `dumps_toml(to_dict(...))` wrote has them all, but for settings that may be None (which
    `to_dict` leaves out), so any other missing key means the file was cut short or edited."""
    hints = typing.get_type_hints(cls)
    missing = []
    for f in dataclasses.fields(cls):
        hint, key = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint) and isinstance(data.get(f.name, {}), dict):
            missing += missing_settings(hint, data.get(f.name, {}), f"{key}.")
        elif f.name not in data and type(None) not in typing.get_args(hint):
            missing.append(key)
    return missing


def to_dict(obj: Any) -> Any:
    """Dataclass to plain dict (TOML/JSON friendly: no None values, string dict keys)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if getattr(obj, f.name) is not None}
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


def dumps_toml(data: dict[str, Any]) -> str:
    """Write a nested dict of scalars, lists and tables as TOML."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(str(k))} = {scalar(x)}"
                                    for k, x in v.items()) + " }"
        raise ConfigError(f"cannot write {v!r} to TOML")

    def table(prefix: str, d: dict[str, Any]) -> None:
        plain = {k: v for k, v in d.items() if not (isinstance(v, dict) and _is_section(v))}
        nested = {k: v for k, v in d.items() if isinstance(v, dict) and _is_section(v)}
        if prefix and (plain or not nested):
            lines.append(f"\n[{prefix}]")
        for k, v in plain.items():
            lines.append(f"{k} = {scalar(v)}")
        for k, v in nested.items():
            table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    return "\n".join(lines).lstrip() + "\n"


def _is_section(d: dict[str, Any]) -> bool:
    # Tables whose keys are all identifiers become [sections]; others (e.g. {"4": 64}) inline.
    return all(str(k).isidentifier() for k in d)
