"""The SLURM test harness itself: a real cluster starts, runs jobs and submitit arrays, stops.

Every test needs the `requires_slurm` fixture (tests/conftest.py): skipped with the reason where
a cluster cannot run, failed instead under ADAPTSCOPE_REQUIRE_SLURM=1 (as in CI).
`test_stop_leaves_no_recorded_daemon` stops the shared cluster, so it stays last.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, is_alive

pytestmark = pytest.mark.usefixtures("requires_slurm")


@pytest.fixture(scope="module")
def cluster(requires_slurm: None) -> Iterator[SlurmCluster]:
    """One cluster for the module: start-up (a few seconds) dominates these tests."""
    slurm = SlurmCluster(startup_timeout=60)
    slurm.start()
    try:
        yield slurm
    finally:
        slurm.stop()


def test_sbatch_wrap_runs_to_completion(cluster: SlurmCluster) -> None:
    job_id, out = cluster.submit_wrap("echo hello-from-slurm")
    assert cluster.wait_job(job_id, timeout=30) == "COMPLETED"
    assert out.read_text().strip() == "hello-from-slurm"


def test_submitit_map_array_returns_results(
    cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitit = pytest.importorskip("submitit")
    for key, value in cluster.env.items():
        monkeypatch.setenv(key, value)
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(slurm_partition="debug", timeout_min=5, cpus_per_task=1,
                               mem_gb=1)
    # A lambda is pickled by value, so the job need not import this test module.
    jobs = executor.map_array(lambda x: x * 10, [1, 2])
    assert len(jobs) == 2
    # Without accounting, sacct fails and submitit's state stays UNKNOWN, so a job that
    # dies without a result file would make job.result() wait forever: bound the wait.
    deadline = time.monotonic() + 60
    while not all(job.done() for job in jobs):
        states = [cluster.job_state(job.job_id) for job in jobs]
        assert not {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"} & set(states), states
        assert time.monotonic() < deadline, f"submitit array not done after 60 s: {states}"
        time.sleep(0.5)
    assert [job.result() for job in jobs] == [10, 20]


def test_stop_leaves_no_recorded_daemon(cluster: SlurmCluster) -> None:
    pids = {name: entry["pid"] for name, entry in cluster.pids.items()}
    assert set(pids) == {"munged", "slurmctld", "slurmd"}
    assert all(is_alive(int(pid)) for pid in pids.values())
    assert cluster.stop() == []
    for name, pid in pids.items():
        assert not is_alive(int(pid)), f"{name} ({pid}) still running"
        with pytest.raises(ProcessLookupError):  # reaped too, not left as a zombie
            os.kill(int(pid), 0)
    assert not cluster.state_dir.exists()
