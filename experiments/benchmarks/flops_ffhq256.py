"""FLOPs of one FFHQ-256 config-f adaptation iteration and one full evaluation's generation,
counted (not timed) with torch's FlopCounterMode, for the sizing note of a paper-scale grid.

    python experiments/benchmarks/flops_ffhq256.py [--batch 4]

An iteration is one discriminator step (G forward without gradient, D forward and backward on a
real and a fake batch) and one generator step (G forward, D forward, backward through both),
without the lazy regularisers (R1 every 16, path length every 4) and method terms, so it is a
lower bound for every method. Convolutions and matrix products only, as FlopCounterMode counts.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from adaptscope.models import Discriminator, Generator


def count(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    g, d = Generator(args.size, 512, 8, channel_multiplier=2), Discriminator(args.size, 2)
    n = args.batch
    real = torch.randn(n, 3, args.size, args.size)

    def d_step() -> None:
        with torch.no_grad():
            fake, _ = g([torch.randn(n, 512)])
        loss = d(fake).mean() - d(real).mean()
        loss.backward()

    def g_step() -> None:
        fake, _ = g([torch.randn(n, 512)])
        d(fake).mean().backward()

    def generate() -> None:
        with torch.no_grad():
            g([torch.randn(n, 512)])

    d_flops, g_flops, gen_flops = count(d_step), count(g_step), count(generate)
    per_iter = d_flops + g_flops
    print(f"config-f {args.size} px, batch {n}: G {sum(p.numel() for p in g.parameters()):,} "
          f"and D {sum(p.numel() for p in d.parameters()):,} parameters")
    print(f"one iteration: {per_iter / 1e12:.2f} TFLOP (D step {d_flops / 1e12:.2f}, "
          f"G step {g_flops / 1e12:.2f})")
    print(f"generating one image: {gen_flops / n / 1e9:.1f} GFLOP")
    grid = 72 * 3000 * per_iter
    print(f"paper grid (6 methods x 4 targets x 3 seeds x 3,000 iterations): "
          f"{grid / 1e15:.0f} PFLOP of training, before regularisers and evaluations")


if __name__ == "__main__":
    main()
