"""Benchmark: adaptscope's intra-cluster LPIPS against the reference's one-pair-per-call loop.

The reference algorithm makes N*K LPIPS calls for the nearest-centre assignment and one call per
pair inside each cluster (at most 50 members). Timing all of them at N=1000 takes hours on a
CPU, so the naive side times `--naive-calls` real LPIPS calls on the same images and
extrapolates to the exact number of calls the reference would make for this assignment; the
output says so. Each side runs in its own process so that peak memory (ru_maxrss) is its own.
A random VGG trunk is used (no weights needed): timing does not depend on the weights.

    OMP_NUM_THREADS=1 python experiments/benchmarks/bench_intra_lpips.py --n 1000 --k 10 --size 64
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F


def make_images(n: int, k: int, size: int, seed: int = 0):
    """K smooth centres and N noisy variations of them, quantised to 8 bits, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(k, 3, 6, 6, generator=g) * 1.6 - 0.8
    centers = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    owner = torch.randint(0, k, (n,), generator=g)
    samples = (centers[owner] + 0.3 * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)

    def q(x):
        return torch.round((x + 1) * 127.5) / 127.5 - 1

    return q(samples), q(centers)


def build_net(net: str):
    from adaptscope.metrics.backbones import new_lpips

    torch.manual_seed(0)
    return new_lpips(net)


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mib() -> float:
    """Current resident set size (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class PeakRSS:
    """Highest RSS seen while the block runs (sampled every 5 ms): the process-wide ru_maxrss
    also holds the transient of building VGG-16 with its classifier, which hides the method."""

    def __enter__(self):
        self.start = self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())


def run_fast(args) -> dict:
    from adaptscope.metrics.intra_lpips import intra_cluster_lpips

    samples, centers = make_images(args.n, args.k, args.size)
    model = build_net(args.net)
    with PeakRSS() as mem:
        start = time.perf_counter()
        result = intra_cluster_lpips(samples, centers, model, input_size=args.lpips_size,
                                     batch_size=args.batch, seed=0,
                                     cache_bytes=args.cache_mib << 20)
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "maxrss_mib": maxrss_mib(),
        "rss_start_mib": mem.start,
        "rss_peak_mib": mem.peak,
        "intra_lpips": result.mean,
        "cluster_sizes": result.cluster_sizes.tolist(),
        "nearest_center": result.nearest_center.tolist(),
        "nearest_distance": result.nearest_distance.tolist(),
    }


def run_naive(args, nearest: list[int]) -> dict:
    """Time `--naive-calls` LPIPS calls of the reference kind (one forward pass per image of
    each pair); half of them sample-vs-centre, half sample-vs-sample."""
    from adaptscope.metrics.lpips_embed import resize_for_lpips

    samples, centers = make_images(args.n, args.k, args.size)
    model = build_net(args.net)
    rng = np.random.default_rng(1)
    checked = []
    mem = PeakRSS().__enter__()
    start = time.perf_counter()
    with torch.no_grad():
        for call in range(args.naive_calls):
            i = int(rng.integers(args.n))
            a = resize_for_lpips(samples[i:i + 1], args.lpips_size)
            if call % 2 == 0:
                c = nearest[i]
                b = resize_for_lpips(centers[c:c + 1], args.lpips_size)
                checked.append((i, model(a, b).item()))
            else:
                j = int(rng.integers(args.n))
                model(a, resize_for_lpips(samples[j:j + 1], args.lpips_size)).item()
    seconds = time.perf_counter() - start
    mem.__exit__(None, None, None)
    return {"seconds": seconds, "calls": args.naive_calls, "maxrss_mib": maxrss_mib(),
            "rss_start_mib": mem.start, "rss_peak_mib": mem.peak, "checked": checked}


def reference_calls(n: int, k: int, cluster_sizes: list[int], max_per_cluster: int = 50) -> int:
    """LPIPS calls of the reference for this assignment: N*K, plus the pairs per cluster."""
    return n * k + sum(math.comb(min(s, max_per_cluster), 2) for s in cluster_sizes)


def child(args, mode: str, payload: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--n", str(args.n), "--k", str(args.k),
           "--size", str(args.size), "--net", args.net, "--batch", str(args.batch),
           "--naive-calls", str(args.naive_calls), "--cache-mib", str(args.cache_mib)]
    if args.lpips_size is not None:
        cmd += ["--lpips-size", str(args.lpips_size)]
    out = subprocess.run(cmd, input=json.dumps(payload or {}), capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--size", type=int, default=64, help="image side")
    parser.add_argument("--lpips-size", type=int, default=None,
                        help="LPIPS input side (default: the image side, no resize)")
    parser.add_argument("--net", default="vgg", choices=["vgg", "alex"])
    parser.add_argument("--batch", type=int, default=4,
                        help="images per forward (4 is fastest for VGG on one CPU thread)")
    parser.add_argument("--naive-calls", type=int, default=200)
    parser.add_argument("--cache-mib", type=int, default=2048,
                        help="intra_cluster_lpips cache_bytes, MiB (sample embeddings kept)")
    parser.add_argument("--child", choices=["fast", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    if args.child == "fast":
        print(json.dumps(run_fast(args)))
        return
    if args.child == "naive":
        print(json.dumps(run_naive(args, json.loads(sys.stdin.read())["nearest_center"])))
        return

    lpips_side = args.lpips_size or args.size
    print(f"intra-cluster LPIPS benchmark: N={args.n} K={args.k} images {args.size}px, "
          f"LPIPS input {lpips_side}px, random {args.net} trunk, "
          f"torch threads {torch.get_num_threads()}")
    fast = child(args, "fast")
    naive = child(args, "naive", {"nearest_center": fast["nearest_center"]})
    total_calls = reference_calls(args.n, args.k, fast["cluster_sizes"])
    per_call = naive["seconds"] / naive["calls"]
    naive_total = per_call * total_calls
    err = max(abs(v - fast["nearest_distance"][i]) / max(abs(v), 1e-12)
              for i, v in naive["checked"])

    print(f"cluster sizes: {fast['cluster_sizes']}  intra-LPIPS {fast['intra_lpips']:.6f}")
    for label, r in (("adaptscope", fast), ("naive loop", naive)):
        print(f"{label} memory: RSS {r['rss_start_mib']:.0f} MiB before the method (model, "
              f"images), peak {r['rss_peak_mib']:.0f} MiB during it (+"
              f"{r['rss_peak_mib'] - r['rss_start_mib']:.0f} MiB); process ru_maxrss "
              f"{r['maxrss_mib']:.0f} MiB")
    print(f"adaptscope : {fast['seconds']:9.1f} s measured")
    print(f"naive loop : {naive_total:9.1f} s EXTRAPOLATED from {naive['calls']} timed calls "
          f"({per_call * 1e3:.1f} ms/call x {total_calls} reference calls)")
    print(f"speed-up   : {naive_total / fast['seconds']:9.1f} x")
    print(f"check      : max relative difference, naive vs adaptscope sample-to-centre LPIPS "
          f"over {len(naive['checked'])} calls: {err:.2e}")


if __name__ == "__main__":
    main()
