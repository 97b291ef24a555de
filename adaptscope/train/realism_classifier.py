"""Training the realism classifier p_t for a real target domain: source vs target images.

The metric that uses the classifier is `adaptscope.metrics.realism`; this module only makes one
(`adaptscope realism train`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adaptscope.data.folder import load_images
from adaptscope.errors import WeightsError, WeightsNotFound
from adaptscope.files import load_weights_only, save_torch
from adaptscope.images import quantize as quantize_8bit
from adaptscope.metrics.realism import FORMAT_TAG, RealismClassifier
from adaptscope.metrics.weights import resolve_weights
from adaptscope.models import FixedLatents, load_checkpoint


def build_realism_classifier(
    image_size: int = 128,
    pretrained: bool | None = None,
    weights_dir: str | os.PathLike | None = None,
) -> tuple[RealismClassifier, str]:
    """A fresh classifier and how its trunk was initialised ('imagenet' or 'scratch').

    `pretrained=None` uses ImageNet weights when they resolve and falls back to scratch;
    True requires them (raises `WeightsNotFound`); False never looks.
    """
    model = RealismClassifier(image_size)
    if pretrained is False:
        return model, "scratch"
    try:
        path = resolve_weights("resnet18", weights_dir)
    except WeightsNotFound:
        if pretrained:
            raise
        return model, "scratch"
    state = load_weights_only(path, what="ResNet-18 state dict",
                              fix="replace it with torchvision's resnet18-f37072fd.pth")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.net.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"fc.weight", "fc.bias"}:
        raise WeightsError(f"{path} is not a torchvision ResNet-18 state dict "
                         f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    return model, "imagenet"


@dataclass(frozen=True)
class RealismTrainResult:
    """What training produced: the file and its held-out accuracy."""

    path: Path
    val_accuracy: float
    train_accuracy: float
    init: str
    n_train: int
    n_val: int


def _as_images(source, image_size: int, what: str) -> torch.Tensor:
    if isinstance(source, torch.Tensor):
        images = source.float()
    else:
        images = load_images(source, image_size)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{what} images must be (N, 3, H, W), got {tuple(images.shape)}")
    if len(images) < 2:
        raise ValueError(f"{what} set {source} has {len(images)} image(s); need at least 2")
    return images


def _split(n: int, val_fraction: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=g)
    n_val = min(n - 1, max(1, math.ceil(n * val_fraction)))
    return perm[n_val:], perm[:n_val]


@torch.no_grad()
def _accuracy(model: RealismClassifier, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    model.eval()
    hits = sum(((model(x[i:i + batch]) > 0).float() == y[i:i + batch]).sum().item()
               for i in range(0, len(x), batch))
    return hits / len(x)


@torch.no_grad()
def _recalibrate_batchnorm(model: RealismClassifier, x: torch.Tensor, batch: int) -> None:
    """Re-estimate BatchNorm statistics as exact averages over the training images: after a
    short training run the running averages still remember the random initialisation."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for i in range(0, len(x), batch):
        model(x[i:i + batch])
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


def _train_epoch(model: RealismClassifier, opt: torch.optim.Optimizer, x: torch.Tensor,
                 y: torch.Tensor, pos_weight: torch.Tensor, batch_size: int,
                 g: torch.Generator) -> float:
    """One pass over the training images (seeded order and flips); the mean loss."""
    model.train()
    order = torch.randperm(len(x), generator=g).to(x.device)
    total = 0.0
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        if len(idx) < 2:  # BatchNorm needs two images
            continue
        xb = x[idx]
        flip = torch.rand(len(idx), generator=g).to(x.device) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        loss = F.binary_cross_entropy_with_logits(model(xb), y[idx], pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / len(x)


def _classes(target, source, sample_source, n_source: int | None,
             image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Target (positive) and source (negative) images, 8-bit, at `image_size`."""
    pos = quantize_8bit(_as_images(target, image_size, "target"))
    if source is not None:
        neg = _as_images(source, image_size, "source")
    else:
        n = n_source or len(pos)
        with torch.no_grad():
            neg = torch.cat([sample_source(min(32, n - i)).detach().float().cpu()
                             for i in range(0, n, 32)])
        neg = _as_images(neg, image_size, "sampled source")
    neg = quantize_8bit(neg)
    # One size for both classes (they may come at different sizes), resized once.
    return tuple(F.interpolate(t, size=(image_size, image_size), mode="bilinear",
                               align_corners=False, antialias=True)
                 if tuple(t.shape[-2:]) != (image_size, image_size) else t for t in (pos, neg))


def train_realism_classifier(
    target: str | os.PathLike | torch.Tensor,
    source: str | os.PathLike | torch.Tensor | None = None,
    out: str | os.PathLike = "realism.pt",
    *,
    sample_source: Callable[[int], torch.Tensor] | None = None,
    n_source: int | None = None,
    image_size: int = 128,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    pretrained: bool | None = None,
    weights_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
) -> RealismTrainResult:
    """Train the source-vs-target classifier, report held-out accuracy, save it to `out`.

    `target` / `source`: image folders or (N, 3, H, W) tensors in [-1, 1]. Instead of `source`,
    `sample_source(n)` may draw source images (e.g. from the pretrained source generator);
    `n_source` defaults to the number of target images. A seeded `val_fraction` of each class
    is held out. Adam (lr 1e-4 from ImageNet weights, 1e-3 from scratch), class-balanced
    logistic loss, horizontal flips.
    """
    if (source is None) == (sample_source is None):
        raise ValueError("give exactly one of `source` (images) and `sample_source` (a sampler)")
    g = torch.Generator().manual_seed(seed)
    pos, neg = _classes(target, source, sample_source, n_source, image_size)
    tr_p, va_p = _split(len(pos), val_fraction, g)
    tr_n, va_n = _split(len(neg), val_fraction, g)
    x_tr = torch.cat([pos[tr_p], neg[tr_n]]).to(device)
    y_tr = torch.cat([torch.ones(len(tr_p)), torch.zeros(len(tr_n))]).to(device)
    x_va = torch.cat([pos[va_p], neg[va_n]]).to(device)
    y_va = torch.cat([torch.ones(len(va_p)), torch.zeros(len(va_n))]).to(device)

    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
        torch.manual_seed(seed)
        model, init = build_realism_classifier(image_size, pretrained, weights_dir)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr or (1e-4 if init == "imagenet" else 1e-3))
    pos_weight = torch.tensor(len(tr_n) / max(len(tr_p), 1), device=device)
    for epoch in range(1, epochs + 1):
        loss = _train_epoch(model, opt, x_tr, y_tr, pos_weight, batch_size, g)
        log(f"epoch {epoch}/{epochs}  loss {loss:.4f}")
    _recalibrate_batchnorm(model, x_tr, batch_size)
    val_acc = _accuracy(model, x_va, y_va, batch_size)
    train_acc = _accuracy(model, x_tr, y_tr, batch_size)
    log(f"held-out accuracy {val_acc:.4f} ({len(x_va)} images), train accuracy {train_acc:.4f}, "
        f"initialised from {init}")

    from adaptscope.version import __version__

    meta = {
        "arch": "resnet18", "image_size": image_size, "init": init,
        "val_accuracy": val_acc, "train_accuracy": train_acc,
        "n_train": len(x_tr), "n_val": len(x_va),
        "n_target": len(pos), "n_source": len(neg),
        "target": str(target) if not isinstance(target, torch.Tensor) else "tensor",
        "source": (str(source) if source is not None and not isinstance(source, torch.Tensor)
                   else "tensor" if source is not None else "generator samples"),
        "epochs": epochs, "batch_size": batch_size, "seed": seed, "val_fraction": val_fraction,
        "adaptscope_version": __version__,
    }
    model.meta = meta
    obj = {"format": FORMAT_TAG, "state_dict": {k: v.detach().cpu() for k, v in
                                                 model.state_dict().items()}, "meta": meta}
    path = save_torch(obj, out)
    return RealismTrainResult(path, val_acc, train_acc, init, len(x_tr), len(x_va))


def source_sampler(
    checkpoint: str | os.PathLike, *, seed: int = 0, device: str | torch.device = "cpu"
) -> Callable[[int], torch.Tensor]:
    """`sample(n) -> (n, 3, S, S)` in [-1, 1] from a source StyleGAN2 checkpoint's `g_ema`
    (truncation 1, fresh per-image noise maps), drawn from one stream seeded by `seed`."""
    g = load_checkpoint(checkpoint).g_ema.to(device).eval()
    latents = FixedLatents(g, seed)

    @torch.no_grad()
    def sample(n: int) -> torch.Tensor:
        z, noise = latents.draw(n)
        return g([z.to(g.device)], noise=noise)[0].clamp(-1, 1).cpu()

    return sample
