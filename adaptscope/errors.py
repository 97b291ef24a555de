"""The errors a user can cause, under one base class, and the exit codes the CLI gives them.

Every message names the file or value at fault and what to do about it; the CLI prints it on one
line without a traceback (set ADAPTSCOPE_DEBUG=1 to see one).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUN_FAILED = 1  # a run (or evaluation) failed; the other runs went on
EXIT_BAD_INPUT = 2  # bad input: nothing was started


class AdaptscopeError(Exception):
    """Base of every error caused by input: a config, a file, a value, a run folder."""

    exit_code: int = EXIT_BAD_INPUT


class ConfigError(AdaptscopeError, ValueError):
    """A configuration value or file that cannot be used."""


class DataError(AdaptscopeError, ValueError):
    """Input images or a domain spec cannot be used."""


class CheckpointError(AdaptscopeError, ValueError):
    """A checkpoint file that cannot be used, with what was expected and what was found."""


class WeightsError(AdaptscopeError, ValueError):
    """A metric network's weight file that cannot be used."""


class WeightsNotFound(AdaptscopeError, FileNotFoundError):
    """A backbone's weight file is in none of the searched places and could not be fetched."""


class PluginError(AdaptscopeError, ValueError):
    """A plugin cannot be found or fails while it is imported."""


class RegistryError(AdaptscopeError, KeyError):
    """An unknown, duplicate or malformed name in a registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RunDirectoryError(AdaptscopeError, ValueError):
    """A run directory that cannot be (re)used as asked."""


class TrajectoryError(AdaptscopeError, ValueError):
    """A trajectory file that cannot be read or appended to."""


class ExportError(AdaptscopeError, ValueError):
    """An export destination (TensorBoard, W&B) that cannot take a run's rows as asked."""


class TrainingDiverged(AdaptscopeError, RuntimeError):
    """A loss became NaN or infinite; the rows recorded before it are kept."""

    exit_code = EXIT_RUN_FAILED
