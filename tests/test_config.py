"""`--set key=value` overrides: values typed by the field they land in, strings kept as typed."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest

from adaptscope.config import (
    ConfigError,
    RawValue,
    apply_overrides,
    dumps_toml,
    from_dict,
    read_toml,
    set_values,
    to_dict,
)
from adaptscope.errors import AdaptscopeError


@dataclass
class Target:
    data: str = "toyfaces:sunglasses"
    files: list[str] | None = None
    shots: int = 10


@dataclass
class Settings:
    name: str = "x"
    seeds: list[int] = field(default_factory=lambda: [0])
    methods: list[str] = field(default_factory=list)
    lr: float = 0.002
    iterations: int = 3000
    ground_truth: bool = False
    sizes: tuple[int, ...] = (8,)
    limit: int | None = None
    target: Target = field(default_factory=Target)
    params: dict[str, Any] = field(default_factory=dict)


def build(*overrides: str) -> Settings:
    return from_dict(Settings, apply_overrides({}, list(overrides)), "test")


def assert_plain(value: Any) -> None:
    """No RawValue anywhere inside a from_dict result."""
    if is_dataclass(value):
        for f in fields(value):
            assert_plain(getattr(value, f.name))
    elif isinstance(value, dict):
        for k, v in value.items():
            assert_plain(k)
            assert_plain(v)
    elif isinstance(value, list | tuple):
        for v in value:
            assert_plain(v)
    else:
        assert not isinstance(value, RawValue), value
        assert value is None or isinstance(value, str | int | float | bool), value


@pytest.mark.parametrize("typed", [
    r"C:\data\babies",
    r'"C:\data\babies"',
    r"'C:\data\babies'",
])
def test_windows_paths_arrive_exactly(typed):
    assert build(f"target.data={typed}").target.data == r"C:\data\babies"


@pytest.mark.parametrize("typed,expected", [
    ("/data/my babies/full set", "/data/my babies/full set"),
    ('"/data/my babies/ "', "/data/my babies/ "),  # quotes keep outer spaces
    ("/data/it's here", "/data/it's here"),
    ('"/data/it\'s here"', "/data/it's here"),
    ('/data/say "hi"', '/data/say "hi"'),
    (r'"C:\new\table\"', "C:\\new\\table\\"),  # no escape processing, not even \" or \t
    ("données/bébés", "données/bébés"),
    ('"', '"'),
    ("", ""),
])
def test_strings_are_kept_as_typed(typed, expected):
    assert build(f"target.data={typed}").target.data == expected


def test_only_one_matching_pair_of_quotes_is_stripped():
    assert build("""name=''x''""").name == "'x'"
    assert build("""name="x'""").name == "\"x'"


def test_a_string_field_given_a_number_stays_a_string():
    cfg = build("name=10", "target.data=1e-3", "params.label=x")
    assert cfg.name == "10" and cfg.target.data == "1e-3"


@pytest.mark.parametrize("override,attr,expected", [
    ("iterations=100", "iterations", 100),
    ("iterations=-3", "iterations", -3),
    ("iterations=1_000", "iterations", 1000),
    ("lr=1e-3", "lr", 0.001),
    ("lr=2", "lr", 2.0),
    ("lr=0.5", "lr", 0.5),
    ("ground_truth=true", "ground_truth", True),
    ("ground_truth=FALSE", "ground_truth", False),
    ("seeds=[0, 1, 2]", "seeds", [0, 1, 2]),
    ("seeds=0,1,2", "seeds", [0, 1, 2]),
    ("seeds=[]", "seeds", []),
    ("seeds=7", "seeds", [7]),
    ("sizes=[16, 32]", "sizes", (16, 32)),
    ("methods=tgan,cdc", "methods", ["tgan", "cdc"]),
    ('methods=["tgan", "cdc"]', "methods", ["tgan", "cdc"]),
    ("limit=5", "limit", 5),
])
def test_values_are_converted_to_the_field_type(override, attr, expected):
    value = getattr(build(override), attr)
    assert value == expected and type(value) is type(expected)


def test_list_items_keep_commas_and_backslashes_inside_quotes():
    cfg = build(r"""target.files=["a,b.png", C:\shots\c.png, "it's.png", données.png]""")
    assert cfg.target.files == ["a,b.png", r"C:\shots\c.png", "it's.png", "données.png"]


def test_any_fields_get_plain_best_guesses():
    cfg = build("params.tau=0.1", "params.n=4", "params.flag=true", "params.mode=both",
                "params.ids=[1, 2]", r"params.path=C:\w", "params.text='0.5'")
    assert cfg.params == {"tau": 0.1, "n": 4, "flag": True, "mode": "both", "ids": [1, 2],
                          "path": r"C:\w", "text": "0.5"}
    assert_plain(cfg)


@pytest.mark.parametrize("override,value", [
    ("iterations=many", "many"),
    ('iterations="10"', '"10"'),
    ("iterations=1.5", "1.5"),
    ("lr=fast", "fast"),
    ("ground_truth=yes", "yes"),
    ("seeds=[0, x]", "x"),
    ("target=babies", "babies"),
])
def test_errors_name_the_option_and_the_value(override, value):
    """Named as typed (`--set key=value`), not as the config file it was applied to."""
    with pytest.raises(ConfigError) as info:
        build(override)
    message = str(info.value)
    assert message.startswith(f"--set {override}: ") and repr(value) in message
    assert "RawValue" not in message and "test" not in message
    with pytest.raises(ConfigError, match=r"^test.iterations: expected int, got 'many'"):
        from_dict(Settings, {"iterations": "many"}, "test")  # a file's value: the file's key


def test_unknown_keys_and_malformed_overrides_are_refused():
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['nosuch'\]"):
        build("target.nosuch=1")
    with pytest.raises(ConfigError, match="key=value"):
        build("iterations")
    with pytest.raises(ConfigError, match="dotted key"):
        build("target..data=x")
    with pytest.raises(ConfigError, match="name is not a section"):
        apply_overrides({"name": "x"}, ["name.first=y"])


def test_config_error_is_the_shared_user_error():
    assert issubclass(ConfigError, AdaptscopeError) and ConfigError.exit_code == 2


def test_overrides_copy_the_input():
    data = {"target": {"shots": 3}}
    out = apply_overrides(data, ["target.shots=4"])
    assert data == {"target": {"shots": 3}} and out["target"]["shots"] == RawValue("4")


def test_set_values_sets_typed_values_without_parsing():
    data = {"target": {"shots": 3}}
    out = set_values(data, {"target.data": r'"C:\data\babies"', "seeds": [1, 2],
                            "iterations": 50, "methods": [], "target.files": ("a.png",),
                            "params.note": "x=1"})
    assert data == {"target": {"shots": 3}}
    cfg = from_dict(Settings, out, "test")
    assert cfg.target.data == r'"C:\data\babies"'  # typed values are never unquoted
    assert (cfg.seeds, cfg.iterations, cfg.methods) == ([1, 2], 50, [])
    assert cfg.target.files == ["a.png"] and cfg.target.shots == 3
    assert cfg.params == {"note": "x=1"}
    with pytest.raises(ConfigError, match="expected int"):
        from_dict(Settings, set_values({}, {"iterations": 1.5}), "test")


def test_set_values_applied_after_overrides_wins():
    data = apply_overrides({}, ["iterations=5", "target.data=a"])
    cfg = from_dict(Settings, set_values(data, {"iterations": 7}), "test")
    assert (cfg.iterations, cfg.target.data) == (7, "a")


def test_path_objects_fill_string_fields():
    cfg = from_dict(Settings, set_values({}, {"target.data": Path("données") / "bébés"}), "t")
    assert cfg.target.data == str(Path("données") / "bébés")


def test_from_dict_output_holds_no_marker_objects():
    cfg = build("name=n", "seeds=1,2", "lr=1", "sizes=4", "limit=3", "target.files=a,b",
                "params.a=1", "params.b=[x, 2.5, false]", "params.c=text")
    assert_plain(cfg)


def test_toml_input_is_unchanged(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "C:\\\\data"\nseeds = [1, 2]\nlr = 1\n[target]\ndata = "données"\n'
                    '[params]\nk = { "4" = 64 }\n', encoding="utf-8")
    cfg = from_dict(Settings, read_toml(path), str(path))
    assert cfg.name == "C:\\data" and cfg.seeds == [1, 2] and cfg.lr == 1.0
    assert cfg.target.data == "données" and cfg.params == {"k": {"4": 64}}
    with pytest.raises(ConfigError, match="expected int"):
        from_dict(Settings, {"iterations": "many"}, "t")


def test_overridden_strings_round_trip_through_toml(tmp_path):
    cfg = build(r'target.data=C:\data\my "babies"', "name=données/bébés")
    path = tmp_path / "resolved.toml"
    path.write_text(dumps_toml(to_dict(cfg)), encoding="utf-8")
    assert from_dict(Settings, read_toml(path), str(path)) == cfg


def test_experiment_config_takes_windows_paths_and_typed_values():
    from adaptscope.spec import ExperimentConfig  # part of the package: failing to import fails
    data = apply_overrides({}, [r'target.data="C:\data\babies"', "seeds=0,1",
                                "schedule.iterations=100", "train.lr=1e-3",
                                "metrics.ground_truth=true", "target.name=10"])
    cfg = from_dict(ExperimentConfig, data, "experiment")
    assert cfg.target.data == r"C:\data\babies" and cfg.target.name == "10"
    assert cfg.seeds == [0, 1] and cfg.schedule.iterations == 100
    assert cfg.train.lr == 0.001 and cfg.metrics.ground_truth is True
    assert_plain(cfg)
