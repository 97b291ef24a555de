"""Time one diffusion training step: full fine-tuning (ddpm_ft) against LoRA, on one CPU thread.

Why: LoRA must not cost more per step than full fine-tuning, or the diffusion family's cheapest
method would be its slowest on the embedded default. The model is the embedded 32 px UNet's
configuration (diffusers UNet2DModel, block_out_channels (16, 32, 64, 64), attention in the
last down block), the schedule the DDPM one (1000 steps), batch 4. Each row is the median of
`--steps` timed steps after `--warmup` untimed ones; steps of the variants are interleaved, so a
slow spell of the machine hits all of them alike. Both the wall-clock time and the process's
CPU time are printed: on a shared machine the CPU time is the steadier of the two. Variants:

- ddpm_ft: every UNet weight trains (`DDPMFineTune`).
- lora: adaptscope's LoRA, merged on the fly (one convolution per adapted layer), default
  targets (attention projections and ResNet convolutions), rank 4.
- lora_attention: the same on the attention projections only (diffusers' examples' targets).
- peft_unmerged: peft's own LoRA layers on the default targets (a second path per layer, an
  extra pair of convolutions for a conv), for reference.

Run: `OMP_NUM_THREADS=1 .venv/bin/python experiments/bench_lora_step.py`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn

from adaptscope.methods.ddpm_ft import DDPMFineTune
from adaptscope.methods.diffusion_base import DiffusionContext, DiffusionMethod
from adaptscope.methods.lora import ATTENTION_TARGETS, RESNET_TARGETS, LoRA
from adaptscope.models.diffusion import DiffusionModel, build_unet
from adaptscope.spec import LoopSpec
from adaptscope.train.diffusion_step import DiffusionStep

EMBEDDED_UNET = {"sample_size": 32, "in_channels": 3, "out_channels": 3, "layers_per_block": 1,
                 "block_out_channels": [16, 32, 64, 64],
                 "down_block_types": ["DownBlock2D"] * 3 + ["AttnDownBlock2D"],
                 "up_block_types": ["AttnUpBlock2D"] + ["UpBlock2D"] * 3,
                 "norm_num_groups": 8, "attention_head_dim": None}


class PeftLoRA(DiffusionMethod):
    """peft's unmerged LoRA layers injected into the UNet (reference point only)."""

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for n, p in self.ctx.model.named_parameters() if "lora_" in n)


def make_step(variant: str, seed: int) -> DiffusionStep:
    torch.manual_seed(seed)
    model = DiffusionModel(build_unet(EMBEDDED_UNET))
    ctx = DiffusionContext(model)
    method: DiffusionMethod
    if variant == "ddpm_ft":
        method = DDPMFineTune(DDPMFineTune.Params(), ctx)
    elif variant == "lora":
        method = LoRA(LoRA.Params(), ctx)
    elif variant == "lora_attention":
        method = LoRA(LoRA.Params(target_modules=list(ATTENTION_TARGETS)), ctx)
    else:
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=4, lora_alpha=4, target_modules=ATTENTION_TARGETS + RESNET_TARGETS)
        model.unet = inject_adapter_in_model(config, model.unet)
        method = PeftLoRA(PeftLoRA.Params(), ctx)
    method.build()
    method.setup()
    return DiffusionStep(model, method, LoopSpec(lr=1e-4, betas=(0.9, 0.999)))


def bench(variants: list[str], steps: int, warmup: int,
          batch: int) -> dict[str, dict[str, list[float]]]:
    """{variant: {"wall": [seconds per step], "cpu": [...]}}."""
    runs: dict[str, Callable[[int], None]] = {}
    for v in variants:
        step = make_step(v, seed=0)
        real = torch.rand(batch, 3, 32, 32) * 2 - 1
        runs[v] = lambda i, step=step, real=real: step(i, real)  # type: ignore[misc]
    times: dict[str, dict[str, list[float]]] = {v: {"wall": [], "cpu": []} for v in variants}
    for i in range(warmup + steps):
        for v in variants:
            t0, c0 = time.perf_counter(), time.process_time()
            runs[v](i)
            if i >= warmup:
                times[v]["wall"].append(time.perf_counter() - t0)
                times[v]["cpu"].append(time.process_time() - c0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--variants", default="ddpm_ft,lora,lora_attention,peft_unmerged")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = args.variants.split(",")
    times = bench(variants, args.steps, args.warmup, args.batch)
    print(f"one training step, batch {args.batch}, 32 px embedded UNet config, "
          f"{torch.get_num_threads()} thread, torch {torch.__version__}; "
          f"median (min-max) of {args.steps} steps, ms")
    for kind in ("wall", "cpu"):
        base = statistics.median(times["ddpm_ft"][kind]) if "ddpm_ft" in times else None
        print(f" {kind} time")
        for v, both in times.items():
            ts = both[kind]
            med = statistics.median(ts)
            rel = f"  x{med / base:.2f} of ddpm_ft" if base else ""
            print(f"  {v:15s} {1000 * med:7.1f} ({1000 * min(ts):.1f}-{1000 * max(ts):.1f}){rel}")


if __name__ == "__main__":
    main()
