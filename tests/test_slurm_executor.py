"""Runs on a real single-node SLURM cluster (tests/slurm_cluster.py), driven through the CLI, and
the run-folder states `adaptscope status` reads. The tests that need SLURM (the `requires_slurm`
fixture, also through `cluster`) are skipped with the reason where no cluster can run (failed
under ADAPTSCOPE_REQUIRE_SLURM=1, as in CI); the rest run everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import submitit
from _tiny_world import write_experiment
from slurm_cluster import SlurmCluster
from typer.testing import CliRunner

from adaptscope import load_trajectories
from adaptscope.cli import app
from adaptscope.spec import ExecutorSpec
from adaptscope.track.rundir import RunDir
from adaptscope.track.status import folder_status
from adaptscope.train import slurm
from adaptscope.train.experiment import load_experiment, run_specs

runner = CliRunner()
COMPARED = ["run_id", "variant", "iteration", "evaluation", "fid", "kid", "precision", "realism_pt",
            "intra_lpips", "nearest_shot_lpips", "memorised_lpips", "loss_d_adv"]


def rows(out: Path) -> pd.DataFrame:
    df = load_trajectories(out)
    return df[[c for c in COMPARED if c in df]].sort_values(["run_id", "iteration"]) \
        .reset_index(drop=True)


# --- without a cluster ------------------------------------------------------------------------


def test_run_job_runs_one_spec_and_requeues_itself(tmp_path, source_checkpoint):
    """submitit's DebugExecutor runs the callable in this process, as a job would."""
    cfg = load_experiment(write_experiment(tmp_path / "e.toml", source_checkpoint,
                                           iterations=4, eval_every=2))
    spec = run_specs(cfg)[0]
    executor = submitit.DebugExecutor(folder=tmp_path / "logs")
    job = executor.submit(slurm.RunJob(), spec.to_dict(), str(tmp_path / "run"))
    assert job.result() == str(tmp_path / "run")
    assert RunDir(tmp_path / "run").is_done()
    again = slurm.RunJob().checkpoint(spec.to_dict(), str(tmp_path / "run"))
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert again.args == (spec.to_dict(), str(tmp_path / "run"))


SETTINGS = ExecutorSpec(kind="slurm", partition="gpu", account="lab", qos="high", time_min=600,
                        cpus_per_run=8, mem_gb=32, gpus_per_run=1, max_parallel=4,
                        sbatch=["--constraint=a100"])


def test_executor_settings_become_sbatch_parameters(tmp_path):
    """The #SBATCH lines come from submitit's own writer, which needs no SLURM binaries."""
    from submitit.slurm.slurm import _get_default_parameters, _make_sbatch_string

    params = slurm.executor_parameters(SETTINGS)
    assert params == {"time": 600, "cpus_per_task": 8, "partition": "gpu", "account": "lab",
                      "qos": "high", "mem": "32768M", "gpus_per_node": 1,
                      "array_parallelism": 4, "additional_parameters": {"constraint": "a100"},
                      "job_name": "adaptscope"}
    assert set(params) <= set(_get_default_parameters())  # names update_parameters accepts
    script = _make_sbatch_string(command="run", folder=tmp_path / "%j", map_count=6, **params)
    lines = {line for line in script.splitlines() if line.startswith("#SBATCH")}
    assert {"#SBATCH --time=600", "#SBATCH --cpus-per-task=8", "#SBATCH --partition=gpu",
            "#SBATCH --account=lab", "#SBATCH --qos=high", "#SBATCH --mem=32768M",
            "#SBATCH --gpus-per-node=1", "#SBATCH --array=0-5%4", "#SBATCH --constraint=a100",
            "#SBATCH --job-name=adaptscope", "#SBATCH --signal=USR2@90"} <= lines
    with pytest.raises(ValueError, match="--name=value"):
        ExecutorSpec(sbatch=["constraint a100"])


@pytest.mark.usefixtures("requires_slurm")
def test_submitits_slurm_executor_accepts_the_parameters(tmp_path):
    """The executor `submit` builds (it needs `srun` on PATH) takes every parameter."""
    executor = submitit.SlurmExecutor(folder=tmp_path / "%j")
    executor.update_parameters(**slurm.executor_parameters(SETTINGS))
    assert executor.parameters["partition"] == "gpu"


def test_status_reads_queued_running_done_failed_and_unfinished(tmp_path, source_checkpoint):
    cfg = load_experiment(write_experiment(tmp_path / "e.toml", source_checkpoint,
                                           iterations=4, eval_every=2))
    spec = run_specs(cfg)[0]
    out = tmp_path / "runs"
    folders = {name: RunDir(out / name) for name in ("done", "failed", "running", "queued",
                                                       "unfinished", "lost")}
    for name in ("done", "failed", "running", "unfinished"):
        folders[name].path.mkdir(parents=True)
        folders[name].write_spec(spec)
    folders["done"].mark_done("finished")
    log = out / "slurm-logs" / "123_1" / "123_1_0_log.err"  # executor.log_folder's default
    log.parent.mkdir(parents=True)
    log.write_text("Traceback ...\nRuntimeError: CUDA out of memory\n")
    folders["failed"].mark_failed("RuntimeError: CUDA out of memory")
    for name, job in (("failed", "123_1"), ("queued", "123_2"), ("lost", "123_3")):
        folders[name].path.mkdir(parents=True, exist_ok=True)
        folders[name].job_file.write_text(json.dumps({"job_id": job, "stderr": str(log)}))
    queue = {"123_2": "PENDING"}
    with folders["running"].lock():
        states = {s.run_id: s for s in folder_status(out, lambda ids: queue)}
    assert {k: v.state for k, v in states.items()} == {
        "done": "done", "failed": "failed", "running": "running", "queued": "queued",
        "unfinished": "unfinished", "lost": "failed"}
    assert "CUDA out of memory" in states["failed"].detail
    assert "end of" in states["failed"].detail and states["failed"].job_id == "123_1"
    assert "before the run started" in states["lost"].detail
    assert states["done"].method == spec.method and states["done"].seed == spec.seed
    result = runner.invoke(app, ["status", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 done" in result.output and "CUDA out of memory" in result.output


def test_slurm_executor_without_slurm_fails_before_submitting(tmp_path, source_checkpoint,
                                                             monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    exp = write_experiment(tmp_path / "e.toml", source_checkpoint)
    result = runner.invoke(app, ["run", "--config", str(exp), "--out", str(tmp_path / "runs"),
                                 "--executor", "slurm"])
    assert result.exit_code == 2
    assert "sbatch" in result.output and "--executor local" in result.output
    assert not list((tmp_path / "runs").glob("*/job.json"))


# --- on a real SLURM cluster ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(requires_slurm):
    with SlurmCluster() as c:
        yield c


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    for key, value in cluster.env.items():
        monkeypatch.setenv(key, value)
    return cluster


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI as a user runs it (its own process: submitit pickles what it submits)."""
    cli = Path(sys.executable).with_name("adaptscope")
    return subprocess.run([str(cli), *args], capture_output=True, text=True, timeout=600)


def test_a_sweep_on_slurm_equals_the_same_sweep_run_locally(on_cluster, tmp_path,
                                                            source_checkpoint):
    """A grid's variants and seeds go to SLURM as one job array."""
    exp = write_experiment(tmp_path / "e.toml", source_checkpoint, iterations=6, eval_every=3)
    common = ["run", "--config", str(exp), "--methods", "freezed", "--seeds", "0,1",
              "--grid", "freezed.trainable_blocks=1,2"]
    local = _cli(*common, "--out", str(tmp_path / "local"), "--executor", "local")
    assert local.returncode == 0, local.stderr
    cluster_run = _cli(*common, "--out", str(tmp_path / "slurm"), "--executor", "slurm")
    assert cluster_run.returncode == 0, cluster_run.stdout + cluster_run.stderr
    assert "submitted 4 job(s)" in cluster_run.stdout
    jobs = [json.loads(p.read_text()) for p in sorted((tmp_path / "slurm").glob("*/job.json"))]
    assert len(jobs) == 4 and len({j["job_id"].split("_")[0] for j in jobs}) == 1  # one array
    pd.testing.assert_frame_equal(rows(tmp_path / "slurm"), rows(tmp_path / "local"))
    status = _cli("status", str(tmp_path / "slurm"))
    assert "4 done" in status.stdout


def test_a_job_signalled_mid_run_resumes_to_the_same_rows(on_cluster, tmp_path,
                                                          source_checkpoint):
    exp = write_experiment(tmp_path / "e.toml", source_checkpoint, iterations=40, eval_every=4)
    common = ["run", "--config", str(exp), "--methods", "tgan", "--seeds", "0"]
    assert _cli(*common, "--out", str(tmp_path / "local")).returncode == 0
    submitted = _cli(*common, "--out", str(tmp_path / "slurm"), "--executor", "slurm",
                     "--no-wait")
    assert submitted.returncode == 0, submitted.stderr
    run_dir = next((tmp_path / "slurm").glob("*/job.json")).parent
    job_id = json.loads((run_dir / "job.json").read_text())["job_id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until the run has recorded a few rows
        if (run_dir / "trajectory.parquet").exists() and \
                len(load_trajectories(run_dir)) >= 3:
            break
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, env=on_cluster.client_env())
    final = slurm.follow(tmp_path / "slurm", [run_dir], lambda statuses: None)
    assert final[0].state == "done", final[0].detail
    log = Path(json.loads((run_dir / "job.json").read_text())["stdout"]).read_text()
    assert "requeu" in log.lower() or "checkpoint" in log.lower(), log[-2000:]
    pd.testing.assert_frame_equal(rows(tmp_path / "slurm"), rows(tmp_path / "local"))


def test_a_config_error_is_caught_before_anything_is_submitted(on_cluster, tmp_path,
                                                               source_checkpoint):
    exp = write_experiment(tmp_path / "e.toml", source_checkpoint)
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                            env=on_cluster.client_env()).stdout.split()
    result = _cli("run", "--config", str(exp), "--out", str(tmp_path / "runs"), "--executor",
                  "slurm", "--set", "train.batch=0")
    assert result.returncode == 2 and "train.batch" in result.stderr
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                           env=on_cluster.client_env()).stdout.split()
    assert set(after) <= set(before)  # no job was submitted (earlier ones may have ended)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_local_workers_on_several_gpus_each_see_one(monkeypatch):
    """On a machine with N GPUs, `cuda` runs get N workers, each pinned to its own GPU."""
    import queue
    from types import SimpleNamespace

    from adaptscope.train import runner as local

    monkeypatch.setattr(local, "gpu_count", lambda: 3)
    runs = [SimpleNamespace(spec=SimpleNamespace(device="cuda"))] * 5
    assert local.default_workers(runs, "cuda") == 3
    assert local.default_workers(runs[:2], "cuda") == 2
    assert local.default_workers(runs, "cuda:1") == 1
    manager = SimpleNamespace(Queue=queue.Queue)
    gpus = local._gpu_queue(manager, runs, workers=2)
    seen = []
    for _ in range(3):  # a third worker finds no GPU left and is not pinned
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        local._pin_gpu(gpus)
        seen.append(os.environ.get("CUDA_VISIBLE_DEVICES"))
    assert seen == ["0", "1", None]
    cpu_runs = [SimpleNamespace(spec=SimpleNamespace(device="cpu"))] * 2
    assert local._gpu_queue(manager, cpu_runs, workers=2) is None
    monkeypatch.setattr(local, "gpu_count", lambda: 1)
    assert local._gpu_queue(manager, runs, workers=2) is None  # one GPU: nothing to pin


def test_status_on_a_cluster_folder_with_queued_running_done_and_failed_runs(
        on_cluster, tmp_path, source_checkpoint):
    import shutil

    source = tmp_path / "source.pt"
    shutil.copy(source_checkpoint, source)
    exp = write_experiment(tmp_path / "e.toml", source, iterations=400, eval_every=100)
    out = tmp_path / "runs"
    done = _cli("run", "--config", str(exp), "--out", str(out), "--methods", "tgan",
                "--seeds", "0", "--iterations", "2", "--eval-every", "1")
    assert done.returncode == 0, done.stderr
    # One job at a time: the first runs, the next two wait in the queue.
    submitted = _cli("run", "--config", str(exp), "--out", str(out), "--methods", "freezed",
                     "--seeds", "0,1,2", "--executor", "slurm", "--no-wait",
                     "--set", "executor.max_parallel=1")
    assert submitted.returncode == 0, submitted.stderr
    folders = sorted(p.parent for p in out.glob("*/job.json"))
    deadline = time.monotonic() + 120
    while not (folders[0] / "trajectory.parquet").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    states = {s.run_id: s.state for s in folder_status(out, slurm.squeue_states)}
    assert sorted(states.values()) == ["done", "queued", "queued", "running"], states
    report = _cli("status", str(out))
    assert "1 done" in report.stdout and "1 running" in report.stdout
    assert "2 queued" in report.stdout
    source.write_bytes(b"not a checkpoint")  # the queued runs now fail when they start
    subprocess.run(["scancel", json.loads((folders[0] / "job.json").read_text())["job_id"]],
                   check=True, env=on_cluster.client_env())
    final = slurm.follow(out, folders, lambda statuses: None)
    assert [s.state for s in final].count("failed") == 2, [(s.state, s.detail) for s in final]
    failed = next(s for s in final if s.state == "failed")
    assert "source.pt" in failed.detail and failed.job_id
    report = _cli("status", str(out))
    assert "2 failed" in report.stdout and "1 unfinished" in report.stdout
