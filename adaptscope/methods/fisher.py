"""The empirical diagonal Fisher that EWC, AdAM and RICK rank or weight parameters by.

Each method draws its own samples (which networks, which losses, which shots and flips), so the
sampling stays in the method; the estimate itself, the weighted mean of per-sample squared
gradients, is this one function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

Losses = Mapping[str, torch.Tensor]  # group name -> a scalar loss of one sample (or batch)
Groups = Mapping[str, Mapping[str, torch.Tensor]]  # group name -> parameter name -> leaf


def empirical_fisher(
    samples: Iterable[tuple[Losses, int]], params: Groups
) -> dict[str, dict[str, torch.Tensor]]:
    """sum_s w_s (d loss_s / d theta)^2 / sum_s w_s for every group's parameters.

    `samples` yields (losses, w): a loss per group, differentiated with respect to that group's
    `params` only, and its weight w (1 for one sample; b for a batch mean of b samples, which
    squares the batch's mean gradient, the cheaper approximation EWC's `fisher_batch` offers).
    A parameter a loss does not reach keeps zero. Gradients are taken with grad mode on, so a
    caller inside `torch.no_grad` still gets them.
    """
    sums = {g: {k: torch.zeros_like(p) for k, p in ps.items()} for g, ps in params.items()}
    total = 0
    with torch.enable_grad():
        for losses, weight in samples:
            for i, (group, loss) in enumerate(losses.items()):
                leaves = list(params[group].values())
                grads = torch.autograd.grad(loss, leaves, retain_graph=i < len(losses) - 1,
                                            allow_unused=True)
                for k, grad in zip(params[group], grads, strict=True):
                    if grad is not None:
                        sums[group][k] += grad.detach().pow(2) * weight
            total += weight
    if total == 0:
        raise ValueError("empirical_fisher needs at least one sample")
    return {g: {k: s / total for k, s in ss.items()} for g, ss in sums.items()}
