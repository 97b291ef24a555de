"""adaptscope: how pretrained GANs keep or lose diversity while adapting to a few-shot domain."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("adaptscope")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

__all__ = ["__version__", "load_trajectories"]


def __getattr__(name: str):
    # Imported lazily so that `import adaptscope` stays cheap (no pandas/pyarrow at import).
    if name == "load_trajectories":
        from adaptscope.track.store import load_trajectories

        return load_trajectories
    raise AttributeError(f"module 'adaptscope' has no attribute {name!r}")
