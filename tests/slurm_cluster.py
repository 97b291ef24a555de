"""A real, throw-away single-node SLURM cluster (munged + slurmctld + slurmd) for tests.

Why: submitting job arrays through submitit can only be trusted against a real scheduler,
so tests start one here, on this machine, in a private state directory, and stop it again
by the exact PIDs they started (never by name).

Use as a module::

    with SlurmCluster() as cluster:
        subprocess.run(["sinfo"], env={**os.environ, **cluster.env})

or as a script::

    python tests/slurm_cluster.py install             # apt-get install slurm-wlm munge
    python tests/slurm_cluster.py start [--dir DIR]   # prints the state directory and env
    python tests/slurm_cluster.py status --dir DIR
    python tests/slurm_cluster.py stop --dir DIR

Needs root (SlurmUser=root, slurmd launches jobs as the submitting user) and the Debian
packages ``slurm-wlm`` and ``munge``. ``slurm_unavailable_reason()`` says why not;
``require_slurm()`` (behind the ``requires_slurm`` fixture of tests/conftest.py) skips a test
with that reason, or fails it under ``ADAPTSCOPE_REQUIRE_SLURM=1`` (set by .ci/run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "sbatch", "squeue", "scontrol", "scancel", "srun")
PIDS_FILE = "pids.json"
MEMORY_MARGIN_MB = 1024  # slurmd drains a node that reports less memory than configured
PARTITION = "debug"


def missing_binaries() -> list[str]:
    """The daemons and clients this harness runs that are not on PATH."""
    return [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name) is None]


def slurm_unavailable_reason() -> str | None:
    """Why a cluster cannot run here, or None when it can; has no side effects."""
    if not sys.platform.startswith("linux"):
        return f"SLURM test cluster needs Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return "SLURM test cluster needs root (slurmd and munged run as root here)"
    missing = missing_binaries()
    if not missing and shutil.which("mungekey") is None and shutil.which("dd") is None:
        missing = ["mungekey (or dd)"]
    if missing:
        how = (
            "install with `apt-get install -y slurm-wlm munge` "
            "or `python tests/slurm_cluster.py install`"
            if shutil.which("apt-get")
            else "and there is no apt-get to install slurm-wlm and munge with"
        )
        return f"SLURM binaries missing: {', '.join(missing)}; {how}"
    return None


REQUIRE_ENV = "ADAPTSCOPE_REQUIRE_SLURM"  # set to 1 where a missing cluster is an error (CI)


def slurm_required() -> bool:
    """Whether this session must run the SLURM tests (CI installs SLURM and sets the variable)."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


def require_slurm() -> None:
    """Skip the calling test where no cluster can run, with the reason; fail it instead under
    `ADAPTSCOPE_REQUIRE_SLURM=1`, so CI cannot pass by skipping the cluster tests."""
    import pytest  # here, so the script runs without pytest (e.g. `sudo python3 ... install`)

    reason = slurm_unavailable_reason()
    if reason is None:
        return
    if slurm_required():
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def install() -> None:
    """Install the Debian packages the harness needs (not done implicitly by tests)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "slurm-wlm", "munge"], check=True, env=env)


def node_hardware() -> dict[str, str]:
    """`slurmd -C` as a dict, so the NodeName line matches what slurmd will report."""
    out = subprocess.run(["slurmd", "-C"], check=True, capture_output=True, text=True).stdout
    first = out.splitlines()[0]
    return dict(field.split("=", 1) for field in first.split())


def free_port() -> int:
    """A currently free TCP port, so this cluster never collides with a system SLURM."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_start_time(pid: int) -> int | None:
    """Kernel start time of `pid` (clock ticks), used to refuse killing a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether `pid` runs (zombies count as dead) and is still the process we started."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time


def render_slurm_conf(state_dir: Path, hostname: str, hardware: Mapping[str, str],
                      ctld_port: int, slurmd_port: int, munge_socket: Path) -> str:
    """slurm.conf for one node that is also the controller; everything under `state_dir`."""
    memory = max(int(hardware["RealMemory"]) - MEMORY_MARGIN_MB, 256)
    topology = " ".join(
        f"{key}={hardware[key]}"
        for key in ("Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
        if key in hardware
    )
    lines = [
        "# Written by tests/slurm_cluster.py; a private single-node test cluster.",
        "ClusterName=adaptscope",
        f"SlurmctldHost={hostname}",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={state_dir / 'ctld-state'}",
        f"SlurmdSpoolDir={state_dir / 'slurmd-spool'}",
        f"SlurmctldPidFile={state_dir / 'slurmctld.pid'}",
        f"SlurmdPidFile={state_dir / 'slurmd.pid'}",
        f"SlurmctldLogFile={state_dir / 'slurmctld.log'}",
        f"SlurmdLogFile={state_dir / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "MpiDefault=none",
        "ReturnToService=2",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "MailProg=/bin/true",
        "KillWait=5",
        f"NodeName={hostname} CPUs={hardware['CPUs']} {topology} RealMemory={memory} State=UNKNOWN",
        f"PartitionName={PARTITION} Default=YES MaxTime=INFINITE State=UP Nodes={hostname}",
    ]
    return "\n".join(lines) + "\n"


class SlurmCluster:
    """munged + slurmctld + slurmd in a private directory; PIDs are kept in `pids.json`.

    Use `start()`/`stop()` or `with SlurmCluster() as cluster:`. `env` holds the variables
    the SLURM clients (sbatch, squeue, submitit) need to reach this cluster.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None,
                 startup_timeout: float = 60.0) -> None:
        self._given_dir = Path(directory).resolve() if directory is not None else None
        self.startup_timeout = startup_timeout
        self.directory: Path | None = self._given_dir
        self.created_dir = False
        self.hostname = socket.gethostname()
        self._popens: dict[str, subprocess.Popen[bytes]] = {}
        self.pids: dict[str, dict[str, int | None]] = {}

    # -- paths and environment -------------------------------------------------
    @property
    def state_dir(self) -> Path:
        if self.directory is None:
            raise RuntimeError("cluster has no state directory yet; call start()")
        return self.directory

    @property
    def conf_path(self) -> Path:
        return self.state_dir / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.state_dir / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """Variables clients need. SLURM finds munge through AuthInfo in slurm.conf, so only
        SLURM_CONF is required; MUNGE_SOCKET is informational (`munge -S $MUNGE_SOCKET`)."""
        return {"SLURM_CONF": str(self.conf_path), "MUNGE_SOCKET": str(self.munge_socket)}

    def client_env(self) -> dict[str, str]:
        """os.environ plus `env`, for subprocess calls to the SLURM clients."""
        return {**os.environ, **self.env}

    # -- lifecycle -------------------------------------------------------------
    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> SlurmCluster:
        """Write the config, start the three daemons, and return once a job has run."""
        reason = slurm_unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        if self._given_dir is None:
            self.directory = Path(tempfile.mkdtemp(prefix="slurm-test-"))
            self.created_dir = True
        else:
            self._given_dir.mkdir(parents=True, exist_ok=True)
            if (self._given_dir / PIDS_FILE).exists():
                pids = json.loads((self._given_dir / PIDS_FILE).read_text())["pids"]
                if any(is_alive(p["pid"], p["start_time"]) for p in pids.values()):
                    raise RuntimeError(f"a cluster is already running in {self._given_dir}")
        try:
            self._write_files()
            self._start_daemons()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _write_files(self) -> None:
        """Config, munge key and the directories munged/slurm check permissions on."""
        state = self.state_dir
        # munged refuses a socket whose directories are not executable by everybody.
        state.chmod(0o711)
        (state / "munge").mkdir(mode=0o755, exist_ok=True)
        (state / "munge").chmod(0o755)
        for sub in ("ctld-state", "slurmd-spool"):
            (state / sub).mkdir(mode=0o700, exist_ok=True)
        key = state / "munge" / "munge.key"
        if not key.exists():
            if shutil.which("mungekey"):
                subprocess.run(["mungekey", "--create", f"--keyfile={key}", "--bits=1024"],
                               check=True, capture_output=True)
            else:
                subprocess.run(["dd", "if=/dev/urandom", f"of={key}", "bs=1", "count=1024"],
                               check=True, capture_output=True)
        os.chown(key, 0, 0)
        key.chmod(0o400)
        conf = render_slurm_conf(state, self.hostname, node_hardware(), free_port(),
                                 free_port(), self.munge_socket)
        self.conf_path.write_text(conf)

    def _spawn(self, name: str, argv: list[str]) -> None:
        """Start one daemon in the foreground, detached from our terminal, and record it."""
        out = (self.state_dir / f"{name}.out").open("ab")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    env=self.client_env(), start_new_session=True)
        finally:
            out.close()
        self._popens[name] = proc
        self.pids[name] = {"pid": proc.pid, "start_time": process_start_time(proc.pid)}
        self._write_pids()

    def _write_pids(self) -> None:
        record = {"pids": self.pids, "created_dir": self.created_dir, "hostname": self.hostname}
        (self.state_dir / PIDS_FILE).write_text(json.dumps(record, indent=2) + "\n")

    def _start_daemons(self) -> None:
        state, conf = self.state_dir, str(self.conf_path)
        munge_dir = state / "munge"
        # -F: foreground, so the Popen PID is the daemon; in -F mode munged logs to stderr,
        # which lands in munged.out (--log-file is only used when it daemonizes).
        self._spawn("munged", [
            "munged", "-F", f"--key-file={munge_dir / 'munge.key'}",
            f"--socket={self.munge_socket}", f"--pid-file={munge_dir / 'munged.pid'}",
            f"--log-file={munge_dir / 'munged.log'}", f"--seed-file={munge_dir / 'munged.seed'}",
        ])
        self._wait_for(lambda: self.munge_socket.exists(), "munged socket", "munged")
        self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", conf])
        self._spawn("slurmd", ["slurmd", "-D", "-f", conf])

    def _wait_for(self, check: Callable[[], bool], what: str, *daemons: str) -> None:
        """Poll `check()` until true; fail early with the log tail if a daemon died."""
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if check():
                return
            for name in daemons or tuple(self._popens):
                proc = self._popens.get(name)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting "
                                       f"for {what}:\n{self.log_tail(name)}")
            time.sleep(0.25)
        raise TimeoutError(f"timed out after {self.startup_timeout}s waiting for {what}:\n"
                           + "\n".join(self.log_tail(n) for n in self.pids))

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The last lines of a daemon's log files, for error messages."""
        texts = []
        for path in (self.state_dir / f"{name}.out", self.state_dir / f"{name}.log"):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                texts.append(f"--- {path}\n" + "\n".join(tail))
        return "\n".join(texts)

    def run_client(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster."""
        return subprocess.run(list(argv), env=self.client_env(), capture_output=True, text=True,
                              check=check, timeout=30)

    def node_state(self) -> str:
        """The node's state as sinfo prints it (e.g. `idle`), or '' when unreachable."""
        res = self.run_client("sinfo", "-h", "-n", self.hostname, "-o", "%T", check=False)
        return res.stdout.strip() if res.returncode == 0 else ""

    def job_state(self, job_id: str) -> str:
        """squeue's state for a job, or ''. Ended jobs stay listed for MinJobAge (300 s),
        but only with `-t all`: plain `squeue -j ID` hides them."""
        res = self.run_client("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T",
                              check=False)
        return res.stdout.strip() if res.returncode == 0 else ""

    def submit_wrap(self, command: str) -> tuple[str, Path]:
        """`sbatch --wrap command`; returns the job id and its output file."""
        out = self.state_dir / "jobs" / "wrap-%j.out"
        out.parent.mkdir(exist_ok=True)
        res = self.run_client("sbatch", "--parsable", f"--chdir={out.parent}",
                              f"--output={out}", "--wrap", command)
        job_id = res.stdout.strip().split(";")[0]
        return job_id, Path(str(out).replace("%j", job_id))

    def wait_job(self, job_id: str, timeout: float | None = None) -> str:
        """Wait until squeue reports the job in a final state and return that state."""
        final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                 "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
        timeout = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in final:
                return state
            time.sleep(0.25)
        raise TimeoutError(f"job {job_id} not finished after {timeout}s (last: {state!r})")

    def wait_ready(self) -> None:
        """Node idle in sinfo, then a `sbatch --wrap hostname` must complete with output."""
        self._wait_for(lambda: self.node_state() == "idle", "node idle in sinfo")
        job_id, out = self.submit_wrap("hostname")
        state = self.wait_job(job_id)
        text = out.read_text().strip() if out.exists() else ""
        if state != "COMPLETED" or not text:
            raise RuntimeError(f"smoke job {job_id} ended {state} with output {text!r}:\n"
                               + self.log_tail("slurmd"))

    def stop(self, timeout: float = 10.0) -> list[int]:
        """Cancel jobs, SIGTERM then SIGKILL exactly the recorded PIDs, remove a temp dir.

        Returns the PIDs that were still alive afterwards (should be empty)."""
        if self.directory is None:
            return []
        if not self.pids and (self.state_dir / PIDS_FILE).exists():
            record = json.loads((self.state_dir / PIDS_FILE).read_text())
            self.pids = record["pids"]
            self.created_dir = self.created_dir or record.get("created_dir", False)
        ctld = self.pids.get("slurmctld")
        if ctld and is_alive(ctld["pid"], ctld["start_time"]) and self.conf_path.exists():
            # slurmstepd outlives slurmd by design, so end running jobs through SLURM first.
            self.run_client("scancel", "--full", "--user=root", check=False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                res = self.run_client("squeue", "-h", "-t", "PD,R,CG,S", "-o", "%i",
                                      check=False)
                if res.returncode != 0 or not res.stdout.strip():
                    break
                time.sleep(0.25)
        survivors: list[int] = []
        for name in reversed(DAEMONS):  # slurmd, slurmctld, munged
            entry = self.pids.get(name)
            if entry is None:
                continue
            pid, start = int(entry["pid"] or 0), entry["start_time"]
            if pid and not self._terminate(name, pid, start, timeout):
                survivors.append(pid)
        if self.created_dir and not survivors:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self._popens.clear()
        return survivors

    def _terminate(self, name: str, pid: int, start: int | None, timeout: float) -> bool:
        """SIGTERM, wait, SIGKILL; reaps our own children. True when the process is gone."""
        proc = self._popens.get(name)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not is_alive(pid, start):
                break
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and is_alive(pid, start):
                if proc is not None:
                    proc.poll()  # reap, so our own child does not linger as a zombie
                time.sleep(0.1)
        if proc is not None:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        return not is_alive(pid, start)

    def status(self) -> dict[str, object]:
        """Recorded daemons and whether each is alive, plus sinfo's node state."""
        if not self.pids and (self.state_dir / PIDS_FILE).exists():
            self.pids = json.loads((self.state_dir / PIDS_FILE).read_text())["pids"]
        alive = {name: {"pid": e["pid"], "alive": is_alive(int(e["pid"] or 0), e["start_time"])}
                 for name, e in self.pids.items()}
        node = self.node_state() if self.conf_path.exists() else ""
        return {"dir": str(self.state_dir), "daemons": alive, "node_state": node}


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "status", "install"])
    parser.add_argument("--dir", help="state directory (start: default a new temp dir)")
    parser.add_argument("--timeout", type=float, default=60.0, help="start-up timeout, s")
    args = parser.parse_args(argv)
    if args.action == "install":
        install()
        return 0
    if args.action == "start":
        reason = slurm_unavailable_reason()
        if reason:
            print(reason, file=sys.stderr)
            return 2
        t0 = time.monotonic()
        cluster = SlurmCluster(args.dir, startup_timeout=args.timeout).start()
        print(json.dumps({"dir": str(cluster.state_dir), "env": cluster.env,
                          "pids": {n: e["pid"] for n, e in cluster.pids.items()},
                          "startup_s": round(time.monotonic() - t0, 2)}, indent=2))
        print(" ".join(f"export {k}={v}" for k, v in cluster.env.items()))
        return 0
    if not args.dir:
        parser.error(f"{args.action} needs --dir (the directory `start` printed)")
    if not (Path(args.dir) / PIDS_FILE).exists():
        print(f"no {PIDS_FILE} in {args.dir}", file=sys.stderr)
        return 1
    cluster = SlurmCluster(args.dir)
    if args.action == "status":
        print(json.dumps(cluster.status(), indent=2))
        return 0
    survivors = cluster.stop()
    print(json.dumps({"stopped": not survivors, "survivors": survivors}))
    return 0 if not survivors else 1


if __name__ == "__main__":
    sys.exit(_main())
