"""Optimisers and resumable training state shared by pretraining and adaptation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from adaptscope.models import Discriminator, Generator, load_checkpoint


def lazy_adam(params, lr: float, every: int, enabled: bool = True,
              betas: tuple[float, float] = (0.0, 0.99)) -> torch.optim.Adam:
    """Adam (rosinality's betas (0, 0.99) by default); with lazy regularisation every `every`
    steps, lr is scaled by c = every / (every + 1) and each beta raised to c, so the effective
    step matches every-step regularisation (as in the reference implementation)."""
    c = every / (every + 1) if enabled else 1.0
    return torch.optim.Adam(params, lr=lr * c, betas=(betas[0] ** c, betas[1] ** c))


def device_rng_state(device: torch.device) -> torch.Tensor | None:
    """The GPU's RNG state (noise maps drawn on a GPU come from it), or None on the CPU."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def restore(path: Path, g: Generator, d: Discriminator, g_ema: Generator,
            g_opt: torch.optim.Optimizer, d_opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Load networks, optimisers and the torch RNGs from a training checkpoint; returns the rest."""
    ck = load_checkpoint(path)
    g.load_state_dict(ck.g.state_dict())
    d.load_state_dict(ck.d.state_dict())
    g_ema.load_state_dict(ck.g_ema.state_dict())
    g_opt.load_state_dict(ck.extra["g_optim"])
    d_opt.load_state_dict(ck.extra["d_optim"])
    torch.set_rng_state(ck.extra["torch_rng"])
    device = g.device
    if ck.extra.get("device_rng") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(ck.extra["device_rng"], device)
    return ck.extra
