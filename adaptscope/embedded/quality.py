"""Evidence that a source generator (a StyleGAN2 or a diffusion model) fits the ToyFaces source
domain.

Every adaptation result starts from the source generator, so its quality has to be shown, not
assumed. Each measure here is paired with its noise floor: the same measure between two disjoint
samples of real source images, which is what a perfect generator would score at that sample
size. Because ToyFaces attributes are known, the toy net's own attribute error on real images is
reported next to the generator's attribute mismatch, so the two are not confused.

All numbers use the embedded toy backbone and are not comparable with Inception/VGG numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from adaptscope.embedded import toyfaces
from adaptscope.embedded.backbones import ToyExtractor
from adaptscope.embedded.toynet import ToyNet, load_toynet
from adaptscope.images import from_uint8, save_grid, to_uint8
from adaptscope.metrics.fid import extract_features, feature_statistics, fid_from_features
from adaptscope.models import FixedLatents, Generator
from adaptscope.models.diffusion import DiffusionModel, FixedNoise

DOMAIN = "source"


# A diffusion source's sampler here: the embedded protocol's (DDIM steps, denoiser precision).
SAMPLER_STEPS = 10
SAMPLER_PRECISION = "bfloat16"
SAMPLER_NOISE = "model"


def _stream_seed(seed: int, index: int) -> int:
    """The seed of sample `index`'s own stream: a sample never depends on how many others are
    drawn or how they are batched."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def _latents(generator: Generator, seed: int, index: int) -> list[torch.Tensor]:
    """Latent and noise maps of GAN sample `index`, from its own stream."""
    z, noise = FixedLatents(generator, _stream_seed(seed, index)).draw(1)
    return [z, *(n.cpu() for n in noise)]


def _generate(generator: Generator | DiffusionModel, seed: int, indices: range) -> torch.Tensor:
    """Images of samples `indices`: a GAN's forward from their latents and noise, or a
    diffusion model's deterministic DDIM from their initial noise."""
    device = generator.device
    if isinstance(generator, DiffusionModel):
        x = torch.cat([FixedNoise(generator.size, _stream_seed(seed, i)).draw(1)
                       for i in indices])
        return generator.sampler(SAMPLER_STEPS, SAMPLER_PRECISION, SAMPLER_NOISE)(x.to(device))
    draws = [_latents(generator, seed, i) for i in indices]
    z, *noise = (torch.cat(parts).to(device) for parts in zip(*draws, strict=True))
    return generator([z], noise=noise)[0]


@torch.no_grad()
def sample_images(generator: Generator | DiffusionModel, n: int, seed: int,
                  batch_size: int = 64) -> np.ndarray:
    """`n` samples (N, H, W, 3) uint8 (a GAN at truncation 1; a diffusion model by DDIM of
    `SAMPLER_STEPS`), 8-bit as saved PNGs would be measured. Sample i depends on (`seed`, i)
    alone, so reports are reproducible and the first k of n samples equal
    ``sample_images(generator, k, seed)``."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    was_training = generator.training
    generator.eval()
    out = [to_uint8(_generate(generator, seed, range(start, min(start + batch_size, n))))
           for start in range(0, n, batch_size)]
    generator.train(was_training)
    return np.concatenate(out)


def real_indices(n: int, seed: int, sets: int = 1) -> list[np.ndarray]:
    """`sets` mutually disjoint draws of `n` identities from the source training range.

    Identities come from one seeded stream of distinct indices, cut into consecutive sets, so
    the first set does not depend on how many sets are asked for."""
    total = n * sets
    if n < 1 or sets < 1 or total > len(toyfaces.SOURCE_RANGE) // 2:
        raise ValueError(f"cannot draw {sets} disjoint sets of {n} source identities")
    rng = np.random.default_rng([seed, 0x50_0C])
    seen: dict[int, None] = {}
    while len(seen) < total:
        seen.update(dict.fromkeys(rng.integers(0, len(toyfaces.SOURCE_RANGE), 4096).tolist()))
    idx = toyfaces.SOURCE_RANGE.start + np.fromiter(seen, np.int64, count=len(seen))[:total]
    return [idx[k * n:(k + 1) * n] for k in range(sets)]


def sample_grid(
    generator: Generator,
    out: str | Path,
    n: int = 64,
    seed: int = 0,
    scale: int = 3,
    ncol: int = 8,
) -> dict[str, Path]:
    """Write `samples.png` (generated) and `real.png` (real source images at the generator's
    resolution) side by side in `out`, so the two can be compared by eye."""
    out = Path(out)
    paths = {"samples": out / "samples.png", "real": out / "real.png"}
    save_grid(sample_images(generator, n, seed), paths["samples"], ncol, scale)
    (idx,) = real_indices(n, seed)
    save_grid(toyfaces.render(DOMAIN, idx, generator.size), paths["real"], ncol, scale)
    return paths


def _net(net: ToyNet | None) -> ToyNet:
    return load_toynet() if net is None else net


def fid_vs_noise_floor(
    generator: Generator,
    n: int = 2000,
    seed: int = 0,
    *,
    net: ToyNet | None = None,
    sizes: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """FID (toy backbone) of `n` samples against `n` real source images, and the noise floor:
    FID of another `n` real images, disjoint from the first, against the same reference.

    FID is biased upwards at small sample sizes, so the pair is also measured on the first `k`
    images of every set for each `k` in `sizes` (default n/4, n/2, n): the generator is close
    to the real distribution when its FID tracks the floor as `k` grows.
    """
    extractor = ToyExtractor(_net(net))
    ref_idx, floor_idx = real_indices(n, seed, sets=2)
    feats = {
        "generated": extract_features(sample_images(generator, n, seed), extractor),
        "reference": extract_features(toyfaces.render(DOMAIN, ref_idx, generator.size), extractor),
        "floor": extract_features(toyfaces.render(DOMAIN, floor_idx, generator.size), extractor),
    }
    sizes = tuple(sorted({k for k in (sizes or (n // 4, n // 2, n)) if 2 <= k <= n} | {n}))
    by_size = []
    for k in sizes:
        ref = feature_statistics(feats["reference"][:k])
        by_size.append({
            "n": k,
            "fid_generated": fid_from_features(feats["generated"][:k], ref),
            "fid_noise_floor": fid_from_features(feats["floor"][:k], ref),
        })
    full = by_size[-1]
    return {
        "backbone": extractor.name,
        "n": n,
        "seed": seed,
        "fid_generated": full["fid_generated"],
        "fid_noise_floor": full["fid_noise_floor"],
        "by_size": by_size,
    }


def level_histogram(levels: np.ndarray, n_levels: int) -> np.ndarray:
    """Relative frequency (n_levels,) of each level in a 1-D array of level indices."""
    levels = np.asarray(levels, dtype=np.int64).reshape(-1)
    if levels.size == 0:
        raise ValueError("no levels to count")
    if levels.min() < 0 or levels.max() >= n_levels:
        raise ValueError(f"levels must lie in 0..{n_levels - 1}")
    return np.bincount(levels, minlength=n_levels) / levels.size


def attribute_tv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-attribute total-variation distance (n_attributes,) between the level histograms of
    two attribute tables (N, n_attributes) and (M, n_attributes), in ToyFaces order: 0 for
    identical histograms, 1 for disjoint ones."""
    a, b = np.asarray(a), np.asarray(b)
    n_attr = len(toyfaces.ATTRIBUTES)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != n_attr or b.shape[1] != n_attr:
        raise ValueError(f"attribute tables must be (N, {n_attr}), got {a.shape} and {b.shape}")
    return np.array([
        0.5 * np.abs(level_histogram(a[:, k], attr.levels)
                     - level_histogram(b[:, k], attr.levels)).sum()
        for k, attr in enumerate(toyfaces.ATTRIBUTES)
    ])


@torch.no_grad()
def predict_attributes(images: np.ndarray, net: ToyNet, batch_size: int = 256) -> np.ndarray:
    """Toy-net attribute levels (N, n_attributes) of uint8 images (N, H, W, 3)."""
    device = next(net.parameters()).device
    parts = [
        net.predict_attributes(from_uint8(images[i:i + batch_size]).to(device)).cpu().numpy()
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts)


def attribute_distances(
    generator: Generator, n: int = 2000, seed: int = 0, *, net: ToyNet | None = None
) -> pd.DataFrame:
    """Per-attribute TV distances between level histograms, one row per attribute.

    - ``tv_generated_vs_real``: toy-net predictions on `n` samples vs ground truth of `n` real
      source identities: how far the generator's attribute mix is from the domain's.
    - ``tv_predicted_real_vs_truth``: toy-net predictions on those real images vs their ground
      truth: the part of the first column the net's own errors can explain.
    - ``tv_generated_vs_predicted_real``: samples vs real images, both seen through the net, so
      the net's systematic errors cancel.
    - ``tv_real_vs_real``: ground truth of two disjoint real draws: the sampling noise floor.
    """
    net = _net(net)
    ref_idx, floor_idx = real_indices(n, seed, sets=2)
    truth = toyfaces.attributes(DOMAIN, ref_idx)
    pred_real = predict_attributes(toyfaces.render(DOMAIN, ref_idx, generator.size), net)
    pred_gen = predict_attributes(sample_images(generator, n, seed), net)
    return pd.DataFrame({
        "attribute": [a.name for a in toyfaces.ATTRIBUTES],
        "levels": [a.levels for a in toyfaces.ATTRIBUTES],
        "tv_generated_vs_real": attribute_tv(pred_gen, truth),
        "tv_predicted_real_vs_truth": attribute_tv(pred_real, truth),
        "tv_generated_vs_predicted_real": attribute_tv(pred_gen, pred_real),
        "tv_real_vs_real": attribute_tv(toyfaces.attributes(DOMAIN, floor_idx), truth),
    })


def toynet_accuracy_table(meta: dict[str, Any]) -> pd.DataFrame:
    """Held-out accuracies from a ToyNet file's metadata as a table: one row for the domain head
    and one per attribute; columns ``all`` and each domain (NaN where the attribute cannot be
    seen in that domain)."""
    acc = meta.get("heldout_accuracy")
    if not acc:
        raise ValueError("ToyNet metadata holds no 'heldout_accuracy'")
    rows = [{"head": "domain", "all": acc["domain_acc"],
             **{d: acc.get(f"domain_acc/{d}", np.nan) for d in toyfaces.DOMAINS}}]
    for attr in toyfaces.ATTRIBUTES:
        key = f"attr_acc/{attr.name}"
        rows.append({"head": attr.name, "all": acc.get(key, np.nan),
                     **{d: acc.get(f"{key}/{d}", np.nan) for d in toyfaces.DOMAINS}})
    return pd.DataFrame(rows, columns=["head", "all", *toyfaces.DOMAINS])
