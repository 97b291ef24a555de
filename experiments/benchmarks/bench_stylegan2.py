"""Time one adaptation-style training iteration (D step + G step, batch 4, non-saturating loss).

Models: the CPU reference point (32 px, 64 channels at every resolution, style_dim 128, 2 mapping
layers) and the full 256 px config-f model (channel multiplier 2). The script prints only what it
measures. An outside figure for comparison, not re-measured here: the reference implementation's
(rosinality's) CPU fallback ran the same 32 px iteration in 278 ms with 1 thread when it was
measured once on a two-core machine of the kind this project's CI uses (such machines differ by
about 2x), so compare only with a figure taken on the same machine.

    python experiments/benchmarks/bench_stylegan2.py [--threads 1] [--device cpu] [--skip-256]
"""

from __future__ import annotations

import argparse
import time

import torch

from adaptscope.models import Discriminator, Generator
from adaptscope.train.losses import d_logistic_loss, g_nonsaturating_loss


def iteration_time(g: Generator, d: Discriminator, batch: int, device: torch.device,
                   warmup: int, repeats: int) -> float:
    g_opt = torch.optim.Adam(g.parameters(), lr=0.002, betas=(0.0, 0.99))
    d_opt = torch.optim.Adam(d.parameters(), lr=0.002, betas=(0.0, 0.99))
    real = torch.randn(batch, 3, g.size, g.size, device=device)

    def step() -> None:
        g.requires_grad_(False)
        d.requires_grad_(True)
        with torch.no_grad():
            fake, _ = g([torch.randn(batch, g.style_dim, device=device)])
        loss = d_logistic_loss(d(real), d(fake))
        d_opt.zero_grad()
        loss.backward()
        d_opt.step()
        g.requires_grad_(True)
        d.requires_grad_(False)
        fake, _ = g([torch.randn(batch, g.style_dim, device=device)])
        loss = g_nonsaturating_loss(d(fake))
        g_opt.zero_grad()
        loss.backward()
        g_opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    sync()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-256", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")

    widths = {4: 64, 8: 64, 16: 64, 32: 64}
    g = Generator(32, 128, 2, channels=widths).to(device)
    d = Discriminator(32, channels=widths).to(device)
    t = iteration_time(g, d, 4, device, warmup=5, repeats=50)
    print(f"32 px, 64 channels, style 128, 2 mapping layers, batch 4: {t * 1000:.1f} ms/iter")
    if not args.skip_256:
        g = Generator(256).to(device)
        d = Discriminator(256).to(device)
        repeats = 20 if device.type == "cuda" else 2
        t = iteration_time(g, d, 4, device, warmup=1 if device.type == "cpu" else 5,
                           repeats=repeats)
        print(f"256 px, channel multiplier 2 (config-f), batch 4: {t * 1000:.0f} ms/iter")
        if device.type == "cuda":
            print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
