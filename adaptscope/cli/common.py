"""What every command module shares: the typer application, the one place a user error is
turned into an `error:` line and an exit code, and the small option helpers several commands use.

The application lives here, not in `adaptscope/cli/__init__.py`, so that the command modules can
import it without importing the package that imports them (no import cycle)."""

from __future__ import annotations

import contextvars
import errno
import os
import re
import traceback
from pathlib import Path
from typing import IO, Any

import typer
from typer.core import TyperGroup

from adaptscope.errors import AdaptscopeError

try:
    from typer._click.exceptions import ClickException  # typer vendors click since 0.2x
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click import ClickException

DEBUG_ENV = "ADAPTSCOPE_DEBUG"


class UserError(ClickException):
    """An AdaptscopeError as the CLI shows it: one `error:` line (plus its traceback when
    ADAPTSCOPE_DEBUG=1), and the error's exit code."""

    def __init__(self, error: AdaptscopeError) -> None:
        text = re.sub(r"\s*[\r\n]+\s*", " ", str(error).strip()) or type(error).__name__
        super().__init__(text)
        self.error = error
        self.exit_code = error.exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            typer.echo("".join(traceback.format_exception(self.error)).rstrip(), file=file,
                       err=file is None)
        typer.echo(f"error: {self.message}", file=file, err=file is None)


_STANDALONE: contextvars.ContextVar[bool] = contextvars.ContextVar("standalone", default=False)


class ErrorHandlingGroup(TyperGroup):
    """Turns an AdaptscopeError raised by any command below it into a `UserError`.

    In standalone mode (the command line, `CliRunner`) the error is shown here and the process
    exits with its code: typer would otherwise draw click errors in a multi-line rich panel.
    Called with `standalone_mode=False`, the `UserError` is raised to the caller instead.
    """

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        token = _STANDALONE.set(standalone_mode)
        try:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        finally:
            _STANDALONE.reset(token)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except AdaptscopeError as err:
            self._fail(err, err)
        except OSError as err:  # an unwritable or missing path, a full disk: bad input, one line
            if isinstance(err, BrokenPipeError) or err.errno == errno.EPIPE:
                raise  # click handles a closed pipe (`adaptscope methods | head`)
            wrapped = AdaptscopeError(describe_os_error(err))
            wrapped.__cause__ = err  # ADAPTSCOPE_DEBUG=1 shows where it was raised
            self._fail(wrapped, err)

    @staticmethod
    def _fail(error: AdaptscopeError, cause: BaseException) -> None:
        shown = UserError(error)
        if not _STANDALONE.get():
            raise shown from cause
        shown.show()
        raise typer.Exit(shown.exit_code) from cause


def describe_os_error(err: OSError) -> str:
    """An OSError as one line naming its path(s) and the operating system's reason."""
    reason = err.strerror or str(err) or type(err).__name__
    if err.filename is None:
        return reason
    where = os.fsdecode(err.filename)
    if err.filename2 is not None:
        where += f" -> {os.fsdecode(err.filename2)}"
    return f"{where}: {reason}"


def rich_console() -> Any:
    """A rich console that prints text as given: no markup in paths (`[b]`) and no emoji codes
    (`toyfaces:sunglasses:`) are interpreted, nothing is highlighted."""
    from rich.console import Console

    return Console(emoji=False, highlight=False)


def make_typer(help: str, **kwargs: Any) -> typer.Typer:
    """A typer application (the top one or a command group) whose errors go through
    `ErrorHandlingGroup`."""
    return typer.Typer(help=help, no_args_is_help=True, cls=ErrorHandlingGroup,
                       pretty_exceptions_enable=False, **kwargs)


app = make_typer("Track realism and diversity of GANs adapting to a new domain from a few images.",
                 add_completion=False)


def options_given(**values: Any) -> dict[str, Any]:
    """The options that were given (not None), for `set_values`: dotted key -> typed value."""
    return {key.replace("__", "."): value for key, value in values.items() if value is not None}


def target_spec(value: str) -> str:
    """'babies' -> 'toyfaces:babies'; folders, zips and 'toyfaces:...' pass through."""
    from adaptscope.embedded import toyfaces

    if ":" not in value and not Path(value).exists() and value in toyfaces.DOMAINS:
        return f"toyfaces:{value}"
    return value


PLUGIN_OPTION = typer.Option(
    [], "--plugin", help="A .py file or module registering methods of your own (repeatable).")
PROTOCOL_OPTION = typer.Option(
    None, help="Evaluation protocol, e.g. dcl-paper (`adaptscope protocols` lists them).")


@app.command()  # registered here, before any command module's, so it is listed first
def version() -> None:
    """Print the adaptscope version."""
    from adaptscope import __version__

    typer.echo(__version__)
