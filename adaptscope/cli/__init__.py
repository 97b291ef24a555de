"""The `adaptscope` command line: one typer application, thin wrappers over the library.

`common` holds the application and its error handling; each other module adds one group of
commands to it when imported:

- `running`: `run` (and `--resume`, SLURM job arrays, the summary printed after runs)
- `tracking`: `track` (checkpoints trained elsewhere)
- `listings`: `methods`, `status`, `protocols`
- `prepare`: the `data`, `pretrain` and `realism` groups
- `studies`: `plot`, `report`, `export` and the `calibrate` group

Commands keep their heavy imports inside the functions, so `adaptscope --help` stays fast.
"""

from adaptscope.cli.common import DEBUG_ENV, ErrorHandlingGroup, UserError, app, describe_os_error

# Typer lists the commands in the order they were registered, then the groups in the order they
# were added: this import order is the order of `adaptscope --help`.
# isort: off
from adaptscope.cli import running, tracking, listings, prepare, studies
# isort: on

__all__ = [
    "DEBUG_ENV",
    "ErrorHandlingGroup",
    "UserError",
    "app",
    "describe_os_error",
    "listings",
    "prepare",
    "running",
    "studies",
    "tracking",
]
