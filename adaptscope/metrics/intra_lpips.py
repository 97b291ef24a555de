"""Intra-cluster LPIPS: the diversity measure of the few-shot adaptation literature.

Protocol (CDC / AdAM evaluation code): the training shots are the cluster centres; each generated
sample joins the centre with the smallest LPIPS (hard nearest-centre); per cluster the members
(never the centre itself) are shuffled, at most 50 kept, and LPIPS averaged over all unordered
pairs; the score is the unweighted mean over clusters with at least 2 members. The reference
shuffles without a seed. Here one seeded permutation of all samples orders every cluster's
members (the same uniformly random subset per cluster, in distribution), which lets the kept
members be known while samples stream through the network. Other papers' rules are options:
`members="first"` keeps the first members in sample (latent-seed) order and
`small_clusters="zero"` counts a cluster with fewer than 2 members as 0 (WeditGAN).

The reference runs one network forward per *pair* (about 44,500 VGG forwards for 1,000 samples
and 10 shots). Here every image goes through the network once (`LPIPSEmbedder`), the embeddings of
the kept members are held within a memory budget (the rest are recomputed), and distances come
from float64 Gram algebra, so memory does not grow with N at 256 px.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from adaptscope.metrics.lpips_embed import (
    LPIPSEmbedder,
    cross_distances,
    pairwise_distances,
    sq_norms,
    to_float64,
)

_CACHE_BYTES = 2 * 2**30  # embeddings of kept members held at most; the rest recomputed


@dataclass(frozen=True)
class IntraLPIPSResult:
    """Intra-cluster LPIPS and the nearest-centre facts it is built from."""

    mean: float  # the score: mean over clusters with >= 2 members (NaN if none)
    std: float  # spread of the per-cluster means over those clusters (ddof as requested)
    cluster_sizes: np.ndarray  # (K,) members per centre, before subsampling
    cluster_means: np.ndarray  # (K,) mean pairwise LPIPS per cluster, NaN below 2 members
    nearest_center: np.ndarray  # (N,) index of each sample's centre
    nearest_distance: np.ndarray  # (N,) LPIPS from each sample to its centre
    sample_to_shot: np.ndarray  # (N, K) LPIPS from each sample to every centre
    shot_distances: np.ndarray  # (K, K) LPIPS between the centres (0 on the diagonal)
    backbone: str  # 'vgg', 'alex' or 'toy'
    input_size: int | None  # side the LPIPS input was resized to (None: native)

    @property
    def nearest_shot_lpips(self) -> float:
        """Mean LPIPS from a sample to its nearest training shot (replication gauge)."""
        return _mean_or_nan(self.nearest_distance)


@dataclass(frozen=True)
class NearestShots:
    """Each sample's nearest centre and its LPIPS to it: the first half of intra-cluster LPIPS,
    on its own where only the replication gauge is wanted (no pairs within clusters)."""

    nearest_center: np.ndarray  # (N,) index of each sample's centre
    nearest_distance: np.ndarray  # (N,) LPIPS from each sample to its centre
    sample_to_shot: np.ndarray  # (N, K) LPIPS from each sample to every centre
    shot_distances: np.ndarray  # (K, K) LPIPS between the centres (0 on the diagonal)

    @property
    def nearest_shot_lpips(self) -> float:
        """Mean LPIPS from a sample to its nearest training shot (replication gauge)."""
        return _mean_or_nan(self.nearest_distance)


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else math.nan


def selection_order(n: int, seed: int, members: str = "random") -> np.ndarray:
    """The order in which samples are visited and members kept: for "random" the seeded
    permutation `np.random.default_rng(seed).permutation`, for "first" sample order."""
    if members == "first":
        return np.arange(n)
    if members != "random":
        raise ValueError(f'members must be "random" or "first", got {members!r}')
    return np.random.default_rng(seed).permutation(n)


def select_members(
    nearest_center: np.ndarray, n_clusters: int, max_per_cluster: int, seed: int,
    members: str = "random",
) -> list[np.ndarray]:
    """Per cluster, the sample indices that are paired: its members in `selection_order`,
    the first `max_per_cluster` of them."""
    order = selection_order(len(nearest_center), seed, members)
    ranked = np.asarray(nearest_center)[order]
    return [order[ranked == k][:max_per_cluster] for k in range(n_clusters)]


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _embed_all(embedder: LPIPSEmbedder, x: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    parts = [embedder.embed(x[s]) for s in _batches(len(x), batch_size)]
    return [torch.cat(layer) for layer in zip(*parts, strict=True)]


def _gather_members(embedder: LPIPSEmbedder, samples: torch.Tensor, members: list[int],
                    kept: dict[int, list[torch.Tensor]], widths: list[int],
                    batch_size: int) -> list[torch.Tensor]:
    """One cluster's member embeddings (m, D_l) per layer, written into one buffer: held rows
    are moved in (and released), the others embedded again batch by batch."""
    device = embedder.device
    out = [torch.empty(len(members), w, device=device) for w in widths]
    missing = []
    for row, i in enumerate(members):
        if i in kept:
            for buf, layer in zip(out, kept.pop(i), strict=True):
                buf[row] = layer[0]
        else:
            missing.append(row)
    for s in _batches(len(missing), batch_size):
        rows = missing[s]
        fresh = embedder.embed(samples[torch.as_tensor([members[r] for r in rows])])
        for buf, layer in zip(out, fresh, strict=True):
            buf[torch.as_tensor(rows, device=device)] = layer
    return out


def _embedder(samples: torch.Tensor, centers: torch.Tensor, net, input_size: int | None | str,
              quantize: bool) -> LPIPSEmbedder:
    """The embedder for `net`, after checking that `samples` and `centers` can be compared."""
    if samples.ndim != 4 or centers.ndim != 4 or samples.shape[1] != 3 or centers.shape[1] != 3:
        raise ValueError(
            f"samples and centers must be (N, 3, H, W) and (K, 3, H, W), got "
            f"{tuple(samples.shape)} and {tuple(centers.shape)}"
        )
    if len(centers) == 0:
        raise ValueError("at least one cluster centre is needed")
    embedder = LPIPSEmbedder(net, input_size, quantize)
    if embedder.input_size is None and samples.shape[-2:] != centers.shape[-2:]:
        raise ValueError(
            f"samples are {tuple(samples.shape[-2:])} and centres {tuple(centers.shape[-2:])}; "
            "pass input_size to compare images of different sizes"
        )
    return embedder


def _embed_centres(embedder: LPIPSEmbedder, centers: torch.Tensor,
                   batch_size: int) -> tuple[list[torch.Tensor], np.ndarray]:
    """The centres' float64 embeddings and their (K, K) LPIPS distances."""
    center_emb = to_float64(_embed_all(embedder, centers, batch_size))
    between = pairwise_distances(center_emb).cpu().numpy()
    np.fill_diagonal(between, 0.0)
    return center_emb, between


def _nearest_batches(
    embedder: LPIPSEmbedder, samples: torch.Tensor, center_emb: list[torch.Tensor], seed: int,
    batch_size: int, members: str = "random",
) -> Iterator[tuple[np.ndarray, list[torch.Tensor], np.ndarray]]:
    """Embed the samples batch by batch in `selection_order`; yield each batch's sample indices,
    per-layer embeddings and LPIPS to every centre (B, K).

    The one place nearest centres are computed, so intra-cluster LPIPS and `nearest_shots` give
    the same distances for the same samples.
    """
    center_norms = sq_norms(center_emb)
    order = selection_order(len(samples), seed, members)
    for s in _batches(len(samples), batch_size):
        idx = order[s]
        emb = embedder.embed(samples[torch.as_tensor(idx)])
        yield idx, emb, cross_distances(emb, center_emb, center_norms).cpu().numpy()
        del emb  # one batch of embeddings alive at a time (they are large at 256 px)


def nearest_shots(
    samples: torch.Tensor,
    centers: torch.Tensor,
    net,
    *,
    seed: int = 0,
    input_size: int | None | str = "default",
    quantize: bool = True,
    batch_size: int = 16,
) -> NearestShots:
    """Each sample's nearest centre (training shot) and its LPIPS to it, exactly as
    `intra_cluster_lpips` finds them with the same arguments, without the pairwise part: the
    replication gauge alone, cheap enough to measure at a dense cadence."""
    embedder = _embedder(samples, centers, net, input_size, quantize)
    center_emb, between = _embed_centres(embedder, centers, batch_size)
    to_shot = np.zeros((len(samples), len(centers)), dtype=np.float64)
    for idx, emb, distances in _nearest_batches(embedder, samples, center_emb, seed, batch_size):
        to_shot[idx] = distances
        del emb
    nearest = to_shot.argmin(axis=1)
    return NearestShots(nearest_center=nearest, nearest_distance=to_shot[np.arange(len(nearest)),
                        nearest], sample_to_shot=to_shot, shot_distances=between)


def intra_cluster_lpips(
    samples: torch.Tensor,
    centers: torch.Tensor,
    net,
    *,
    max_per_cluster: int = 50,
    seed: int = 0,
    members: str = "random",
    small_clusters: str = "drop",
    input_size: int | None | str = "default",
    quantize: bool = True,
    batch_size: int = 16,
    std_ddof: int = 1,
    cache_bytes: int = _CACHE_BYTES,
) -> IntraLPIPSResult:
    """Intra-cluster LPIPS of generated `samples` (N, 3, H, W) around the training shots
    `centers` (K, 3, H, W), both in [-1, 1].

    `net`: an `LPIPSNet` (such as the embedded world's toy net) or an `lpips.LPIPS` model.
    `input_size`: side the LPIPS input is resized to; "default" is the network's own (256 for
    vgg/alex, as the reference; native for the toy net). `quantize`: round inputs to 8
    bits first, as the reference's saved PNGs are. `std_ddof=1` matches `torch.Tensor.std` used
    by the reference scripts [U]. Embeddings of kept members are held up to `cache_bytes`;
    members beyond the budget are embedded a second time. `members`: which members a cluster
    keeps ("random": a seeded shuffle as CDC; "first": in sample order). `small_clusters`: a
    cluster with fewer than 2 members is left out of the mean and std ("drop", CDC) or counts
    as 0 ("zero", WeditGAN).
    """
    embedder = _embedder(samples, centers, net, input_size, quantize)
    if max_per_cluster < 2:
        raise ValueError(f"max_per_cluster must be >= 2, got {max_per_cluster}")
    if small_clusters not in ("drop", "zero"):
        raise ValueError(f'small_clusters must be "drop" or "zero", got {small_clusters!r}')
    n, k = len(samples), len(centers)
    center_emb, between = _embed_centres(embedder, centers, batch_size)

    to_shot = np.zeros((n, k), dtype=np.float64)
    chosen: list[list[int]] = [[] for _ in range(k)]
    kept: dict[int, list[torch.Tensor]] = {}  # sample -> its per-layer embedding rows
    budget = cache_bytes
    widths: list[int] = []  # embedding width per layer
    for idx, emb, distances in _nearest_batches(embedder, samples, center_emb, seed,
                                                batch_size, members):
        to_shot[idx] = distances
        centre = distances.argmin(axis=1)
        widths = [layer.shape[1] for layer in emb]
        row_bytes = sum(widths) * 4
        for j, i in enumerate(idx.tolist()):
            members = chosen[centre[j]]
            if len(members) < max_per_cluster:
                members.append(i)
                if row_bytes <= budget:
                    kept[i] = [layer[j:j + 1].clone() for layer in emb]
                    budget -= row_bytes
        del emb

    nearest = to_shot.argmin(axis=1)
    nearest_d = to_shot[np.arange(n), nearest]
    cluster_means = np.full(k, np.nan)
    for c, members in enumerate(chosen):
        if len(members) < 2:
            continue
        emb = _gather_members(embedder, samples, members, kept, widths, batch_size)
        d = pairwise_distances(emb)
        iu = torch.triu_indices(len(members), len(members), offset=1, device=d.device)
        cluster_means[c] = d[iu[0], iu[1]].mean().item()

    if small_clusters == "zero":
        cluster_means[np.isnan(cluster_means)] = 0.0
    valid = cluster_means[~np.isnan(cluster_means)]
    mean = float(valid.mean()) if len(valid) else math.nan
    std = float(valid.std(ddof=std_ddof)) if len(valid) > std_ddof else math.nan
    return IntraLPIPSResult(
        mean=mean,
        std=std,
        cluster_sizes=np.bincount(nearest, minlength=k),
        cluster_means=cluster_means,
        nearest_center=nearest,
        nearest_distance=nearest_d,
        sample_to_shot=to_shot,
        shot_distances=between,
        backbone=embedder.name,
        input_size=embedder.input_size,
    )
