"""Time the embedded default's pieces: one adaptation iteration per method, one evaluation.

    python experiments/benchmarks/bench_embedded.py [--iterations 60] [--threads 1]

Iteration times are measured between progress events, so evaluations are not included; the
evaluation time is one full protocol evaluation (FID, p_t, intra-LPIPS, ground truth) of the
source generator. Methods with stages are timed in their last stage with `--set` shortening the
first and `--from N` starting the clock after the switch; periodic work (RICK's re-estimation)
falls inside the window and is averaged in:

    python experiments/benchmarks/bench_embedded.py --methods tgan,adam,rick,minegan,bsa \
        --iterations 100 --from 30 --set adam.probe_iterations=10 --set adam.n_fisher=20 \
        --set rick.warmup_iter=10 --set minegan.miner_iterations=10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from adaptscope.models import load_checkpoint
from adaptscope.spec import source_checkpoint_path
from adaptscope.track.evaluate import Evaluator
from adaptscope.track.target import load_target
from adaptscope.train.experiment import load_experiment, run_specs
from adaptscope.train.loop import run_adaptation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", default="tgan,tgan_ada,freezed,ewc,cdc,dcl")
    parser.add_argument("--skip-evaluation", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="KEY=VALUE setting of every timed run (a method's stage length).")
    parser.add_argument("--from", dest="start", type=int, default=0,
                        help="Start the clock at this iteration (after a method's first stage).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_experiment(None, [f"threads={args.threads}"])
    spec = cfg.runs()[0]
    if not args.skip_evaluation:
        _time_evaluation(spec)

    n = args.iterations
    for method in args.methods.split(","):
        cfg = load_experiment(None, [f'methods=["{method}"]', f"threads={args.threads}",
                                     f"schedule.iterations={n}", f"schedule.eval_every={n}",
                                     *args.overrides])
        stamps: dict[int, float] = {}

        def on_event(event: dict, stamps: dict[int, float] = stamps) -> None:
            if event["kind"] == "progress":
                stamps[event["iteration"]] = time.perf_counter()

        with tempfile.TemporaryDirectory() as tmp:
            run_adaptation(run_specs(cfg)[0], Path(tmp) / "run", on_event=on_event)
        first, last = min(i for i in stamps if i >= args.start), max(stamps)
        per_iter = (stamps[last] - stamps[first]) / (last - first)
        print(f"{method:<8} {per_iter * 1000:6.1f} ms per iteration (batch {spec.train.batch})")


def _time_evaluation(spec) -> None:
    g_ema = load_checkpoint(source_checkpoint_path(spec.source)).g_ema
    target = load_target(spec.target.data, g_ema.size, spec.target.shots)
    evaluator = Evaluator(spec.metrics, target, spec.seed)
    evaluator.evaluate(g_ema)  # warm-up (first call builds lazily cached pieces)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        evaluator.evaluate(g_ema)
        times.append(time.perf_counter() - start)
    m = spec.metrics
    print(f"one evaluation ({m.fid_n_gen} samples for FID, {m.lpips_n_samples} for "
          f"intra-LPIPS, toy backbones): {min(times):.2f} s (best of 3)")


if __name__ == "__main__":
    main()
