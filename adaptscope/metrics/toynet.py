"""ToyNet: the embedded world's metric network (offline FID, LPIPS and realism backbone).

A small CNN trained on all four ToyFaces domains to tell the domain and every ground-truth
attribute apart, so its features measure exactly the variation the world contains:

- ``embed`` (128-d) is the FID feature; it is a linear map of the whole last feature map rather
  than a global average, so that where the head sits (an attribute) stays visible to FID.
- ``lpips_features`` are the four conv stages' activations. ``lpips_weights`` are uniform,
  1/L on every channel of each of the L layers, so the distance
  ``sum_l mean_hw sum_c w_c (n0 - n1)^2`` over channel-unit-normalised features is the plain
  average of per-layer cosine distances (no layer is favoured; it lies in [0, 4]).
- ``p_target`` is the binary source-vs-target realism probability, softmax over the source and
  target domain logits, as the paper's realism classifier scores generated images.

Inputs are [-1, 1] images of any size, resized (bilinear, antialiased) to 32 px.
The shipped weights live in ``adaptscope/assets/toynet.pt`` and are rebuilt by
``adaptscope pretrain backbone`` with the recipe in ``experiments/pretrain-backbone.toml``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adaptscope.data import toyfaces

NATIVE_SIZE = 32
FORMAT_TAG = "adaptscope.toynet/1"
ASSET_NAME = "toynet.pt"
# Identities the network trains on: outside every target's FULL_SET and the source GAN's range,
# so the held-out evaluation on FULL_SET images (and source-range images) is honest.
TRAIN_RANGE = range(3_000_000, 4_000_000)


def _conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.2)]


class ToyNet(nn.Module):
    """Four conv stages (32-64-128-128 channels, each ending in a stride-2 conv: 32 -> 2 px),
    a 128-d embedding, a domain head and one classification head per attribute."""

    def __init__(
        self,
        channels: tuple[int, ...] = (32, 64, 128, 128),
        embed_dim: int = 128,
        attribute_levels: tuple[int, ...] = tuple(a.levels for a in toyfaces.ATTRIBUTES),
        n_domains: int = len(toyfaces.DOMAINS),
    ) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.config = {
            "channels": list(channels),
            "embed_dim": embed_dim,
            "attribute_levels": list(attribute_levels),
            "n_domains": n_domains,
        }
        # Early stages get a full-resolution conv before downsampling: small attributes (eye
        # size, earrings) are one or two pixels wide at 32 px.
        self.stages = nn.ModuleList(
            [
                nn.Sequential(*_conv(3, c1, 1), *_conv(c1, c1, 2)),
                nn.Sequential(*_conv(c1, c2, 1), *_conv(c2, c2, 2)),
                nn.Sequential(*_conv(c2, c3, 2)),
                nn.Sequential(*_conv(c3, c4, 2)),
            ]
        )
        final = NATIVE_SIZE // 16
        self.embedding = nn.Sequential(
            nn.Flatten(), nn.Linear(c4 * final * final, embed_dim), nn.LeakyReLU(0.2)
        )
        self.domain_head = nn.Linear(embed_dim, n_domains)
        self.attribute_heads = nn.ModuleList(nn.Linear(embed_dim, k) for k in attribute_levels)
        for k, c in enumerate(channels):
            self.register_buffer(f"lpips_w{k}", torch.full((c,), 1.0 / len(channels)))

    @property
    def lpips_weights(self) -> list[torch.Tensor]:
        """Non-negative per-channel LPIPS weights, one (C_l,) tensor per layer."""
        return [getattr(self, f"lpips_w{k}") for k in range(len(self.stages))]

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"ToyNet expects (N, 3, H, W) images in [-1, 1], got {tuple(x.shape)}")
        x = x.float()
        if tuple(x.shape[-2:]) != (NATIVE_SIZE, NATIVE_SIZE):
            x = F.interpolate(
                x, size=(NATIVE_SIZE, NATIVE_SIZE), mode="bilinear", align_corners=False,
                antialias=True,
            )
        return x

    def lpips_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Raw (unnormalised) activations of each conv stage."""
        h = self._prepare(x)
        feats = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, embed_dim) feature for FID."""
        return self.embedding(self.lpips_features(x)[-1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        e = self.embed(x)
        return self.domain_head(e), [head(e) for head in self.attribute_heads]

    def domain_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 4) logits in ``toyfaces.DOMAINS`` order."""
        return self.domain_head(self.embed(x))

    def p_target(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """(N,) probability of `domain` against the source: softmax over the two logits."""
        if domain not in toyfaces.TARGET_DOMAINS:
            raise ValueError(
                f"p_target needs a target domain ({', '.join(toyfaces.TARGET_DOMAINS)}), "
                f"got {domain!r}"
            )
        logits = self.domain_logits(x)
        t = toyfaces.DOMAINS.index(domain)
        return torch.sigmoid(logits[:, t] - logits[:, 0])

    def attribute_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One (N, levels) logit tensor per attribute, in ``toyfaces.ATTRIBUTES`` order."""
        e = self.embed(x)
        return [head(e) for head in self.attribute_heads]

    def predict_attributes(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n_attributes) int64 predicted levels."""
        return torch.stack([lg.argmax(dim=1) for lg in self.attribute_logits(x)], dim=1)

    def lpips_distance(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """(N,) LPIPS-form distance between paired images, with this net's features."""
        total = torch.zeros((), device=self.lpips_w0.device)
        for f0, f1, w in zip(
            self.lpips_features(x0), self.lpips_features(x1), self.lpips_weights, strict=True
        ):
            n0 = f0 / (f0.norm(dim=1, keepdim=True) + 1e-10)
            n1 = f1 / (f1.norm(dim=1, keepdim=True) + 1e-10)
            diff = (n0 - n1).square() * w.view(1, -1, 1, 1)
            total = total + diff.sum(dim=1).mean(dim=(1, 2))
        return total


# --- files -------------------------------------------------------------------------------------


def default_asset() -> Path:
    """Path of the shipped weights inside the installed package."""
    return Path(str(resources.files("adaptscope").joinpath("assets", ASSET_NAME)))


def save_toynet(net: ToyNet, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write weights, architecture and `meta` (plain data) atomically; loadable weights-only."""
    from adaptscope.models.checkpoint import atomic_save

    obj = {
        "format": FORMAT_TAG,
        "config": net.config,
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "meta": dict(meta or {}),
    }
    atomic_save(obj, path)
    Path(path).chmod(0o644)  # a shipped asset must be readable by every user of the install
    return Path(path)


def read_toynet_meta(path: str | Path | None = None) -> dict[str, Any]:
    """The metadata stored with a ToyNet file (held-out accuracies, recipe, versions)."""
    return _read(path)["meta"]


def _read(path: str | Path | None) -> dict[str, Any]:
    p = default_asset() if path is None else Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"ToyNet weights not found at {p}; rebuild them with `adaptscope pretrain backbone "
            f"--out {p}` (recipe: experiments/pretrain-backbone.toml)"
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign or pickled content
        raise ValueError(
            f"{p} cannot be loaded as ToyNet weights with weights_only=True ({err}); "
            "rebuild it with `adaptscope pretrain backbone`"
        ) from err
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_TAG:
        raise ValueError(f"{p} is not a ToyNet file (expected format {FORMAT_TAG!r})")
    return obj


def load_toynet(path: str | Path | None = None) -> ToyNet:
    """Load ToyNet weights (default: the shipped asset) as a frozen network in eval mode."""
    obj = _read(path)
    cfg = obj["config"]
    net = ToyNet(
        channels=tuple(cfg["channels"]),
        embed_dim=cfg["embed_dim"],
        attribute_levels=tuple(cfg["attribute_levels"]),
        n_domains=cfg["n_domains"],
    )
    net.load_state_dict(obj["state_dict"], strict=True)
    return net.eval().requires_grad_(False)


# --- training ----------------------------------------------------------------------------------


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
        from adaptscope import __version__

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
