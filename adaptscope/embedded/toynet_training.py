"""Training the toy metric network on all four ToyFaces domains, and its held-out accuracy.

The recipe's shipped values are in experiments/pretrain-backbone.toml; `adaptscope pretrain
backbone` runs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from adaptscope.embedded import toyfaces
from adaptscope.embedded.toynet import NATIVE_SIZE, TRAIN_RANGE, ToyNet, save_toynet


@dataclass
class ToyNetRecipe:
    """Training recipe; the shipped values are in experiments/pretrain-backbone.toml."""

    steps: int = 2400
    batch: int = 128  # images per step, split evenly over the four domains
    seed: int = 0
    size: int = 32  # render size of training images (the net itself works at 32 px)
    lr: float = 0.002
    noise: float = 0.03  # max std of added Gaussian pixel noise, so features are not brittle
    eval_per_domain: int = 300
    threads: int = 1


def _labelled_batch(domain: str, idx: np.ndarray, size: int):
    d = toyfaces.DOMAINS.index(domain)
    x = toyfaces.render_tensor(domain, idx, size)
    attrs = torch.from_numpy(toyfaces.attributes(domain, idx))
    mask = torch.from_numpy(np.broadcast_to(toyfaces.observable(domain), attrs.shape).copy())
    return x, torch.full((len(idx),), d, dtype=torch.int64), attrs, mask


def _cat(parts):
    return [torch.cat(items) for items in zip(*parts, strict=True)]


def heldout_indices(domain: str, count: int) -> np.ndarray:
    """Fixed evaluation identities: the first of a target's FULL_SET or the source range."""
    r = toyfaces.full_set(domain)
    return np.arange(r.start, r.start + min(count, len(r)), dtype=np.int64)


@torch.no_grad()
def evaluate_toynet(net: ToyNet, size: int = 32, per_domain: int = 300) -> dict[str, float]:
    """Held-out domain accuracy (overall and per domain) and per-attribute accuracy, each
    attribute over the domains where it is observable."""
    was_training = net.training
    net.eval()
    res: dict[str, float] = {}
    correct = {a.name: [] for a in toyfaces.ATTRIBUTES}
    dom_hits = []
    for domain in toyfaces.DOMAINS:
        x, d, attrs, mask = _labelled_batch(domain, heldout_indices(domain, per_domain), size)
        logits, att_logits = net(x)
        hit = (logits.argmax(1) == d).float()
        dom_hits.append(hit)
        res[f"domain_acc/{domain}"] = hit.mean().item()
        for k, attr in enumerate(toyfaces.ATTRIBUTES):
            if mask[0, k]:
                ok = (att_logits[k].argmax(1) == attrs[:, k]).float()
                correct[attr.name].append(ok)
                res[f"attr_acc/{attr.name}/{domain}"] = ok.mean().item()
    res["domain_acc"] = torch.cat(dom_hits).mean().item()
    for name, parts in correct.items():
        res[f"attr_acc/{name}"] = torch.cat(parts).mean().item()
    res["attr_acc_mean"] = float(np.mean([res[f"attr_acc/{a.name}"] for a in toyfaces.ATTRIBUTES]))
    net.train(was_training)
    return res


def _loss(net: ToyNet, x, d, attrs, mask) -> torch.Tensor:
    logits, att_logits = net(x)
    loss = F.cross_entropy(logits, d)
    for k, lg in enumerate(att_logits):
        per = F.cross_entropy(lg, attrs[:, k], reduction="none")
        m = mask[:, k].float()
        loss = loss + (per * m).sum() / m.sum().clamp_min(1.0) / len(att_logits)
    return loss


def train_toynet(
    steps: int = ToyNetRecipe.steps,
    batch: int = ToyNetRecipe.batch,
    seed: int = ToyNetRecipe.seed,
    size: int = ToyNetRecipe.size,
    out: str | Path | None = None,
    *,
    lr: float = ToyNetRecipe.lr,
    noise: float = ToyNetRecipe.noise,
    eval_per_domain: int = ToyNetRecipe.eval_per_domain,
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Train ToyNet on freshly rendered batches of all four domains; return held-out accuracies
    (and save the net with them and the recipe in its metadata when `out` is given).

    Loss: cross-entropy on the domain plus the mean cross-entropy over attribute heads, each
    attribute masked out on domains where it cannot be seen (``toyfaces.UNOBSERVABLE``).
    Adam with a cosine-decayed learning rate.
    """
    if steps < 1 or batch < len(toyfaces.DOMAINS):
        raise ValueError(f"need steps >= 1 and batch >= {len(toyfaces.DOMAINS)}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = ToyNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps))
    )
    per = batch // len(toyfaces.DOMAINS)
    start = time.perf_counter()
    net.train()
    for step in range(1, steps + 1):
        parts = [
            _labelled_batch(dom, rng.integers(TRAIN_RANGE.start, TRAIN_RANGE.stop, per), size)
            for dom in toyfaces.DOMAINS
        ]
        x, d, attrs, mask = _cat(parts)
        if noise > 0:
            x = x + torch.randn_like(x) * (torch.rand(len(x), 1, 1, 1) * noise)
        loss = _loss(net, x, d, attrs, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps:
            log(f"step {step}/{steps}  loss {loss.item():.4f}  {time.perf_counter() - start:.0f}s")
    seconds = time.perf_counter() - start
    net.eval()
    acc = evaluate_toynet(net, size, eval_per_domain)
    log(_format_accuracies(acc))
    if out is not None:
        from adaptscope.version import __version__

        recipe = ToyNetRecipe(
            steps=steps, batch=batch, seed=seed, size=size, lr=lr, noise=noise,
            eval_per_domain=eval_per_domain, threads=torch.get_num_threads(),
        )
        meta = {
            "heldout_accuracy": acc,
            "recipe": asdict(recipe),
            "train_seconds": round(seconds, 1),
            "train_range": [TRAIN_RANGE.start, TRAIN_RANGE.stop],
            "native_size": NATIVE_SIZE,
            "domains": list(toyfaces.DOMAINS),
            "attributes": [a.name for a in toyfaces.ATTRIBUTES],
            "adaptscope_version": __version__,
            "torch_version": str(torch.__version__),
        }
        save_toynet(net, out, meta)
        log(f"saved {out}")
    return acc


def _format_accuracies(acc: dict[str, float]) -> str:
    lines = [f"held-out domain accuracy {acc['domain_acc']:.4f}"]
    lines += [f"  {d:<11} {acc[f'domain_acc/{d}']:.4f}" for d in toyfaces.DOMAINS]
    lines.append(f"held-out attribute accuracy (mean {acc['attr_acc_mean']:.4f})")
    for a in toyfaces.ATTRIBUTES:
        per = "  ".join(
            f"{d}={acc[f'attr_acc/{a.name}/{d}']:.3f}"
            for d in toyfaces.DOMAINS
            if f"attr_acc/{a.name}/{d}" in acc
        )
        lines.append(f"  {a.name:<12} {acc[f'attr_acc/{a.name}']:.4f}  ({per})")
    return "\n".join(lines)
