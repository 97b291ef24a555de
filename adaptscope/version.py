"""The installed adaptscope version, recorded with every trajectory and trained network."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("adaptscope")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"
