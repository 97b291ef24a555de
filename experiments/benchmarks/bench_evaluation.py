"""Time one full evaluation of the embedded default and the share of the feature metrics in it.

    python experiments/benchmarks/bench_evaluation.py [--repeats 5] [--threads 1]

A full evaluation generates the fixed samples once and measures everything from them: FID and,
from the same FID features, KID, precision/recall, density/coverage and feature memorisation;
intra-LPIPS and, from the same LPIPS distances, LPIPS memorisation; p_t; ground truth. The
feature metrics add no network pass, so their cost is the arithmetic on features, timed here on
the features of the same samples. Prints the median of `--repeats` evaluations of the source
generator, the median time of the feature metrics alone, and the ratio of the evaluation to the
evaluation without them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from adaptscope.metrics.fid import extract_features, fid_from_features
from adaptscope.models import load_checkpoint
from adaptscope.spec import source_checkpoint_path
from adaptscope.track.evaluate import Evaluator
from adaptscope.track.target import load_target
from adaptscope.train.experiment import load_experiment


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_experiment(None, [f"threads={args.threads}"]).runs()[0]
    g_ema = load_checkpoint(source_checkpoint_path(spec.source)).g_ema
    target = load_target(spec.target.data, g_ema.size, spec.target.shots)
    evaluator = Evaluator(spec.metrics, target, spec.seed)
    evaluator.evaluate(g_ema)  # warm-up

    full = _median_time(lambda: evaluator.evaluate(g_ema), args.repeats)
    images = np.concatenate([u8 for u8, _ in evaluator._generated(g_ema, spec.metrics.fid_n_gen)])
    fake = extract_features(images, evaluator.extractor)
    every = _median_time(lambda: evaluator._feature_metrics(fake), args.repeats)
    fid = _median_time(lambda: fid_from_features(fake, evaluator.real_stats), args.repeats)
    extra = every - fid
    print(f"protocol {spec.metrics.protocol}: {len(fake)} generated x {len(evaluator.real_feats)} "
          f"real features of dimension {fake.shape[1]}, threads {args.threads}")
    print(f"full evaluation (all metrics)          {full:6.2f} s (median of {args.repeats})")
    print(f"feature metrics beyond FID             {extra:6.2f} s")
    print(f"evaluation without them                {full - extra:6.2f} s")
    print(f"ratio with / without                   {full / (full - extra):6.2f}x")


if __name__ == "__main__":
    main()
