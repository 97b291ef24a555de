"""User errors reach the terminal in one place: one `error:` line and the error's exit code."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from adaptscope.cli import UserError, app
from adaptscope.errors import EXIT_BAD_INPUT, ConfigError, TrainingDiverged

runner = CliRunner()


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error: ")]


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("ADAPTSCOPE_DEBUG", raising=False)


def test_bad_set_key_is_one_line_with_exit_2(tmp_path):
    result = runner.invoke(app, ["run", "--set", "nosuch.key=1", "--out", str(tmp_path)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert len(error_lines(result.stderr)) == 1
    assert "unknown setting(s) ['nosuch']" in error_lines(result.stderr)[0]
    assert result.stderr.strip().count("\n") == 0  # nothing else on stderr
    assert "Traceback" not in result.output and "╭" not in result.output
    assert not list(tmp_path.iterdir())


def test_debug_shows_the_traceback(tmp_path):
    result = runner.invoke(app, ["run", "--set", "nosuch.key=1", "--out", str(tmp_path)],
                           env={"ADAPTSCOPE_DEBUG": "1"})
    assert result.exit_code == EXIT_BAD_INPUT
    assert "Traceback (most recent call last)" in result.stderr
    assert "ConfigError" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: ")


def test_missing_config_file_is_named(tmp_path):
    missing = tmp_path / "missing.toml"
    result = runner.invoke(app, ["run", "--config", str(missing), "--out", str(tmp_path / "o")])
    assert result.exit_code == EXIT_BAD_INPUT
    assert error_lines(result.stderr) == [f"error: config file {missing} does not exist"]
    assert "Traceback" not in result.output


def test_bad_seeds_are_a_config_error(tmp_path):
    result = runner.invoke(app, ["run", "--seeds", "0,x", "--out", str(tmp_path)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert error_lines(result.stderr) == [
        "error: --seeds expects comma-separated integers, got '0,x'"]


def test_plot_of_a_missing_folder(tmp_path):
    result = runner.invoke(app, ["plot", str(tmp_path / "nosuchdir"), "--out", str(tmp_path)])
    assert result.exit_code == EXIT_BAD_INPUT
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "nosuchdir" in lines[0]


def test_unknown_figure_format(tmp_path):
    result = runner.invoke(app, ["plot", str(tmp_path), "--format", "gif"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert error_lines(result.stderr) == [
        "error: --format: figure formats must be among png, pdf, svg; got 'gif'"]


def test_subcommand_errors_go_the_same_way(tmp_path):
    result = runner.invoke(app, ["pretrain", "source", "--config", str(tmp_path / "no.toml"),
                                 "--set", "nosuch=1", "--out", str(tmp_path / "o")])
    assert result.exit_code == EXIT_BAD_INPUT
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "unknown setting(s) ['nosuch']" in lines[0]
    assert not (tmp_path / "o").exists()


def test_messages_are_folded_to_one_line_and_keep_the_exit_code():
    error = UserError(ConfigError("first line\n  second line\r\nthird"))
    assert (error.message, error.exit_code) == ("first line second line third", 2)
    assert UserError(TrainingDiverged("loss is nan")).exit_code == 1


def test_without_standalone_mode_the_error_is_raised(tmp_path):
    from typer.main import get_command

    with pytest.raises(UserError) as info:
        get_command(app).main(["run", "--config", str(tmp_path / "x.toml")],
                              standalone_mode=False)
    assert isinstance(info.value.error, ConfigError)


def test_click_usage_errors_are_left_to_click():
    result = runner.invoke(app, ["run", "--no-such-option"])
    assert result.exit_code == 2
    assert "No such option" in result.output and not error_lines(result.output)
