"""The realism score p_t: how strongly a source-vs-target classifier calls generated images target.

The paper's "realisticness classifier" is a binary classifier trained on real source images vs the
full real target set; p_t is the mean probability it gives generated images of being target. Its
architecture is not published [U]; here it is a torchvision ResNet-18, from ImageNet weights when
they resolve (`resolve_weights('resnet18')`) and from scratch otherwise, recorded in the file.
In the embedded world the toy net's `p_target` plays this role.
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

from adaptscope.metrics.cache import atomic_write
from adaptscope.metrics.images import quantize as quantize_8bit

FORMAT_TAG = "adaptscope.realism/1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RealismClassifier(nn.Module):
    """ResNet-18 with one logit ("target"), taking [-1, 1] images of any size."""

    def __init__(self, image_size: int = 128):
        super().__init__()
        import torchvision

        self.image_size = image_size
        self.net = torchvision.models.resnet18(weights=None)
        self.net.fc = nn.Linear(self.net.fc.in_features, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.meta: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Target logits (N,)."""
        x = x.float()
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        x = ((x + 1) / 2 - self.mean) / self.std
        return self.net(x).squeeze(1)

    @torch.no_grad()
    def p_target(self, x: torch.Tensor, domain: str | None = None) -> torch.Tensor:
        """(N,) probability of the target domain (`domain` is accepted for interface parity
        with the toy net and ignored: this classifier knows one target)."""
        return torch.sigmoid(self(x))


def build_realism_classifier(
    image_size: int = 128,
    pretrained: bool | None = None,
    weights_dir: str | os.PathLike | None = None,
) -> tuple[RealismClassifier, str]:
    """A fresh classifier and how its trunk was initialised ('imagenet' or 'scratch').

    `pretrained=None` uses ImageNet weights when they resolve and falls back to scratch;
    True requires them (raises `WeightsNotFound`); False never looks.
    """
    from adaptscope.metrics.weights import WeightsNotFound, resolve_weights

    model = RealismClassifier(image_size)
    if pretrained is False:
        return model, "scratch"
    try:
        path = resolve_weights("resnet18", weights_dir)
    except WeightsNotFound:
        if pretrained:
            raise
        return model, "scratch"
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.net.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"fc.weight", "fc.bias"}:
        raise ValueError(f"{path} is not a torchvision ResNet-18 state dict "
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
        from adaptscope.data.folder import load_images

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
    pos, neg = (F.interpolate(t, size=(image_size, image_size), mode="bilinear",
                              align_corners=False, antialias=True)
                if tuple(t.shape[-2:]) != (image_size, image_size) else t for t in (pos, neg))
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
        model.train()
        order = torch.randperm(len(x_tr), generator=g).to(device)
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < 2:  # BatchNorm needs two images
                continue
            xb = x_tr[idx]
            flip = torch.rand(len(idx), generator=g).to(device) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = F.binary_cross_entropy_with_logits(model(xb), y_tr[idx],
                                                      pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        log(f"epoch {epoch}/{epochs}  loss {total / len(x_tr):.4f}")
    _recalibrate_batchnorm(model, x_tr, batch_size)
    val_acc = _accuracy(model, x_va, y_va, batch_size)
    train_acc = _accuracy(model, x_tr, y_tr, batch_size)
    log(f"held-out accuracy {val_acc:.4f} ({len(x_va)} images), train accuracy {train_acc:.4f}, "
        f"initialised from {init}")

    from adaptscope import __version__

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
    path = atomic_write(Path(out), lambda tmp: torch.save(obj, tmp))
    return RealismTrainResult(path, val_acc, train_acc, init, len(x_tr), len(x_va))


def load_realism_classifier(path: str | os.PathLike,
                            device: str | torch.device = "cpu") -> RealismClassifier:
    """A trained classifier (eval mode, `.meta` filled) from its file, loaded weights-only."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"realism classifier {p} does not exist; train one with "
                                "`adaptscope realism train`")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign or pickled content
        raise ValueError(f"{p} cannot be loaded weights-only ({err})") from err
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_TAG:
        raise ValueError(f"{p} is not an adaptscope realism classifier ({FORMAT_TAG})")
    model = RealismClassifier(int(obj["meta"]["image_size"]))
    model.load_state_dict(obj["state_dict"], strict=True)
    model.meta = dict(obj["meta"])
    return model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def realism_score(
    images: torch.Tensor,
    scorer,
    *,
    domain: str | None = None,
    batch_size: int = 64,
    quantize: bool = True,
) -> float:
    """p_t: mean target probability of generated images (N, 3, H, W) in [-1, 1].

    `scorer`: a `RealismClassifier`, or the toy net (`p_target(x, domain)`, `domain` required).
    Images are quantised to 8 bits first, like the real images the classifier learnt from.
    """
    if len(images) == 0:
        raise ValueError("no images to score")
    if not isinstance(scorer, RealismClassifier) and domain is None:
        raise ValueError("the toy net scores against a named target domain: pass domain=")
    device = next(scorer.parameters()).device if hasattr(scorer, "parameters") else "cpu"
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].float()
        x = (quantize_8bit(x) if quantize else x).to(device)
        total += scorer.p_target(x, domain).double().sum().item()
    return total / len(images)


def source_sampler(
    checkpoint: str | os.PathLike, *, seed: int = 0, device: str | torch.device = "cpu"
) -> Callable[[int], torch.Tensor]:
    """`sample(n) -> (n, 3, S, S)` in [-1, 1] from a source StyleGAN2 checkpoint's `g_ema`
    (truncation 1, fresh per-image noise maps), drawn from one generator seeded by `seed`."""
    from adaptscope.models.checkpoint import load_checkpoint

    g = load_checkpoint(checkpoint).g_ema.to(device).eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    sides = [2 ** ((i + 5) // 2) for i in range(g.num_layers)]

    @torch.no_grad()
    def sample(n: int) -> torch.Tensor:
        z = torch.randn(n, g.style_dim, generator=gen).to(device)
        noise = [torch.randn(n, 1, s, s, generator=gen).to(device) for s in sides]
        return g([z], noise=noise)[0].clamp(-1, 1).cpu()

    return sample
