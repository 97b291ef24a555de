"""Is one single-threaded process per run faster than one run at a time with all threads?

Runs two short embedded-default runs (tgan, dcl) both ways into temporary directories and prints
the wall times. This is what `adaptscope run`'s default (workers = CPU cores, 1 thread each)
rests on.

    python experiments/benchmarks/bench_parallel_runs.py [--iterations 100]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console

from adaptscope.train import runner
from adaptscope.train.experiment import load_experiment


def timed(workers: int, threads: int, iterations: int, out: Path) -> float:
    cfg = load_experiment(None, [
        'methods=["tgan", "dcl"]', f"threads={threads}", f"schedule.iterations={iterations}",
        f"schedule.eval_every={iterations}"])
    planned = runner.plan(cfg.runs(), out)
    start = time.perf_counter()
    runner.execute(planned, workers, Console(quiet=True))
    elapsed = time.perf_counter() - start
    failed = [r.error for r in planned if r.status == "failed"]
    if failed:
        raise RuntimeError(failed)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        parallel = timed(2, 1, args.iterations, Path(tmp) / "parallel")
        sequential = timed(1, cores, args.iterations, Path(tmp) / "sequential")
    print(f"2 runs x {args.iterations} iterations (+2 evaluations each), {cores} cores")
    print(f"  2 processes x 1 thread : {parallel:.1f} s")
    print(f"  1 process  x {cores} threads: {sequential:.1f} s")
    print(f"  speed-up of one process per run: {sequential / parallel:.2f}x")


if __name__ == "__main__":
    main()
