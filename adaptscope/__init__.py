"""adaptscope: how pretrained GANs keep or lose diversity while adapting to a few-shot domain."""

from adaptscope.version import __version__

__all__ = ["__version__", "load_trajectories", "stage_aligned"]


def __getattr__(name: str):
    # Imported lazily so that `import adaptscope` stays cheap (no pandas/pyarrow at import).
    if name == "load_trajectories":
        from adaptscope.track.store import load_trajectories

        return load_trajectories
    if name == "stage_aligned":
        from adaptscope.track.views import stage_aligned

        return stage_aligned
    raise AttributeError(f"module 'adaptscope' has no attribute {name!r}")
