"""Methods of one's own: loading plugins by file or module, and the errors when that fails."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adaptscope.cli import app
from adaptscope.errors import AdaptscopeError, ConfigError
from adaptscope.methods import METHODS, get_method
from adaptscope.methods.plugins import PluginError, import_plugins
from adaptscope.spec import spec_from_dict
from adaptscope.train.experiment import load_experiment, method_class

EXAMPLE = Path(__file__).resolve().parents[1] / "experiments" / "example_plugin.py"


@pytest.fixture(autouse=True)
def isolated_registry():
    """Each test starts with only the built-in methods registered, and leaves it so."""
    methods, modules = dict(METHODS.items()), set(sys.modules)
    yield
    for name in METHODS.names():
        if METHODS[name] is not methods.get(name):
            METHODS.unregister(name)
    for name, cls in methods.items():
        METHODS.register(name, cls)
    for name in set(sys.modules) - modules:
        if name.startswith("adaptscope_plugin_"):
            del sys.modules[name]


def test_methods_command_lists_a_plugin_method_with_its_settings():
    result = CliRunner().invoke(app, ["methods", "--plugin", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "frozen_mapping" in result.output
    assert "frozen_mapping.freeze_mapping = True" in result.output
    assert "dcl.tau" in result.output  # the built-in methods are still listed


def test_experiment_with_a_plugin_validates_its_settings_and_records_it(monkeypatch, tmp_path):
    monkeypatch.chdir(EXAMPLE.parent)  # a relative path is taken from the working directory
    cfg = load_experiment(None, ['methods=["frozen_mapping"]',
                                 "frozen_mapping.freeze_mapping=false"], [EXAMPLE.name])
    (spec,) = cfg.runs()
    assert spec.plugins == [str(EXAMPLE)]
    assert spec.method_params == {"freeze_mapping": False}
    # A worker or --resume rebuilds the spec from its dict and finds the method again.
    assert method_class(spec_from_dict(spec.to_dict())).__name__ == "FrozenMapping"
    with pytest.raises(ConfigError, match="unknown"):
        load_experiment(None, ['methods=["frozen_mapping"]', "frozen_mapping.nope=1"],
                        [str(EXAMPLE)])


def test_importing_a_plugin_twice_registers_it_once():
    import_plugins([str(EXAMPLE)])
    first = get_method("frozen_mapping")
    import_plugins([str(EXAMPLE), str(EXAMPLE)])
    assert get_method("frozen_mapping") is first


def test_unknown_method_points_at_plugins():
    with pytest.raises(AdaptscopeError, match="not_a_method.*--plugin"):
        load_experiment(None, ['methods=["not_a_method"]'])


def test_missing_plugin_file_is_named(tmp_path):
    missing = tmp_path / "mine.py"
    with pytest.raises(ConfigError, match=f"plugin {missing}: no such file"):
        load_experiment(None, None, [str(missing)])


def test_missing_plugin_module_is_named():
    with pytest.raises(PluginError, match="'no_such_adaptscope_plugin': module not found"):
        import_plugins(["no_such_adaptscope_plugin"])


def test_plugin_that_fails_on_import_is_named_with_its_error(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('forgot a dependency')\n")
    with pytest.raises(PluginError, match="broken.py.*RuntimeError: forgot a dependency"):
        import_plugins([str(broken)])
    # After fixing the file, it imports.
    broken.write_text(textwrap.dedent(
        """
        from adaptscope.methods import Method, register_method

        @register_method("fixed_plugin_method")
        class Fixed(Method):
            summary = "test"
        """))
    import_plugins([str(broken)])
    assert "fixed_plugin_method" in METHODS


def test_plugins_must_be_a_list_of_strings(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("plugins = 3\n")
    with pytest.raises(ConfigError, match="plugins must be a list"):
        load_experiment(config)


@pytest.mark.parametrize("body,named", [
    ("import sys\nsys.exit(3)\n", "called sys.exit(3) while being imported"),
    ("class Stop(BaseException):\n    pass\nraise Stop('no')\n",
     "failed while being imported: Stop: no"),
])
def test_a_plugin_that_exits_on_import_is_one_error_naming_it(body, named, tmp_path):
    plugin = tmp_path / "quits.py"
    plugin.write_text(body)
    out = tmp_path / "runs"
    for args in (["run", "--methods", "tgan", "--out", str(out)], ["methods"]):
        result = CliRunner().invoke(app, [*args, "--plugin", str(plugin)])
        assert result.exit_code == 2, result.output  # before: 3 (or 1), and no message
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"plugin {plugin} {named}" in errors[0]
        assert "Traceback" not in result.output
    assert not out.exists()


def test_ctrl_c_while_a_plugin_imports_stays_a_ctrl_c(tmp_path):
    plugin = tmp_path / "slow.py"
    plugin.write_text("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        import_plugins([str(plugin)])


def test_each_plugin_loaded_is_named_once_on_stderr():
    result = CliRunner().invoke(app, ["methods", "--plugin", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"loading plugin {EXAMPLE}"]
    result = CliRunner().invoke(app, ["methods", "--plugin", str(EXAMPLE)])
    assert result.stderr == ""  # imported already in this process
