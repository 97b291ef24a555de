"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
from _tiny_world import make_source_checkpoint
from slurm_cluster import require_slurm


@pytest.fixture(scope="session")
def requires_slurm() -> None:
    """Every test that needs SLURM asks for this, directly or through its cluster fixture, so
    one place decides: skipped with the reason where no cluster can run here, failed instead
    under ADAPTSCOPE_REQUIRE_SLURM=1 (CI), and no cluster is started for nothing."""
    require_slurm()


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Cached statistics go to this session's temporary folder, never the user's cache."""
    monkeypatch.setenv("ADAPTSCOPE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def source_checkpoint(tmp_path_factory) -> Path:
    """A seeded, untrained 16 px source model (see `_tiny_world`)."""
    return make_source_checkpoint(tmp_path_factory.mktemp("source") / "tiny.pt")


@pytest.fixture
def one_thread():
    """One torch thread, as runs use (`RunSpec.threads`): tiny networks only lose time to more."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
