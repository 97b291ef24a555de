"""FID of generated images against the full target set, on clean-fid's building blocks.

clean-fid re-featurises the real folder on every generator evaluation; during adaptation FID is
measured at many iterations against one fixed target set, so the real statistics are computed
once (`real_statistics`, cached on disk) and each evaluation only featurises generated images.
Resizing (clean-fid's "clean" PIL-bicubic resizer) and the Frechet distance
(`cleanfid.fid.frechet_distance`) are clean-fid's own, so numbers equal `cleanfid.fid.compute_fid`
with the same feature extractor.

Generated images are quantised to 8 bits by default (clip, round), i.e. measured as the saved
PNGs of the reference protocols would be. clean-fid's own generator mode does *not* quantise (it
resizes the float output and clips after resizing); `quantize=False` reproduces that.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from cleanfid.fid import frechet_distance
from cleanfid.resize import make_resizer

from adaptscope.images import to_uint8_values
from adaptscope.metrics.extractors import FeatureExtractor
from adaptscope.metrics.fid_stats import (
    FIDStats,
    content_digest,
    iter_uint8_images,
    load_cached,
    save_cached,
    stats_key,
)

ImageSource = str | os.PathLike | torch.Tensor


def protocol(extractor: FeatureExtractor) -> dict:
    """How images reach the extractor; part of the cache key and of the recorded protocol."""
    resize = (f"clean-fid PIL bicubic (float) to {extractor.input_size}"
              if extractor.input_size else "none (backbone resizes)")
    return {"backbone": extractor.name, "resize": resize, "real_images": "8-bit"}


def _to_input(img: np.ndarray, extractor: FeatureExtractor, resizers: dict) -> torch.Tensor:
    """(H, W, 3) array of values in [0, 255] -> (3, S, S) float32 extractor input."""
    size = extractor.input_size
    if size:
        if size not in resizers:
            resizers[size] = make_resizer("PIL", False, "bicubic", (size, size))
        img = resizers[size](img)
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))


def extract_features(
    images: Iterable[np.ndarray], extractor: FeatureExtractor, batch_size: int = 64
) -> np.ndarray:
    """Features (N, D) of (H, W, 3) images with values in [0, 255] (sizes may differ)."""
    resizers: dict = {}
    feats: list[np.ndarray] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            out = extractor(torch.stack(batch))
            feats.append(out.detach().cpu().numpy().reshape(len(batch), -1))
            batch.clear()

    for img in images:
        item = _to_input(img, extractor, resizers)
        if batch and (item.shape != batch[0].shape or len(batch) >= batch_size):
            flush()
        batch.append(item)
    flush()
    if not feats:
        raise ValueError("no images to featurise")
    return np.concatenate(feats)


def feature_statistics(feats: np.ndarray) -> FIDStats:
    """Mean and covariance (float64) of a feature matrix (N, D)."""
    if len(feats) < 2:
        raise ValueError(f"FID needs at least 2 images, got {len(feats)}")
    feats = np.asarray(feats, dtype=np.float64)
    return FIDStats(feats.mean(axis=0), np.cov(feats, rowvar=False), len(feats))


def _real_images(source: ImageSource, resolution: int | None) -> Iterator[np.ndarray]:
    resize = make_resizer("PIL", True, "bicubic", (resolution, resolution)) if resolution else None
    for img in iter_uint8_images(source):
        if resize is not None and img.shape[:2] != (resolution, resolution):
            img = resize(img)
        yield img


def real_features(
    source: ImageSource,
    extractor: FeatureExtractor,
    *,
    resolution: int | None = None,
    cache: bool = True,
    cache_folder: str | os.PathLike | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Features (N, D) of the full real target set, from the cache when already extracted.

    `source`: a folder of images, a uint8 tensor (N, 3, H, W), or a float tensor in [-1, 1]
    (quantised to 8 bits). `resolution`: bring every real image to this square size first
    (PIL bicubic, 8-bit), as when the target set is prepared at the generator's resolution;
    None keeps native sizes (clean-fid's folder mode).
    """
    if isinstance(source, torch.Tensor) and source.dtype != torch.uint8:
        source = to_uint8_values(source).to(torch.uint8)
    proto = protocol(extractor)
    folder = Path(cache_folder) if cache_folder is not None else None
    key = None
    if cache:
        key = stats_key(content_digest(source), extractor.name, resolution, proto)
        cached = load_cached(key, folder)
        if cached is not None:
            return cached
    feats = extract_features(_real_images(source, resolution), extractor, batch_size)
    if key is not None:
        label = str(source) if not isinstance(source, torch.Tensor) else "tensor"
        save_cached(key, feats, {"source": label, "resolution": resolution, **proto}, folder)
    return feats


def real_statistics(source: ImageSource, extractor: FeatureExtractor, **kwargs) -> FIDStats:
    """FID statistics of the full real target set (`real_features`' arguments)."""
    return feature_statistics(real_features(source, extractor, **kwargs))


def _generated(images: torch.Tensor, quantize: bool) -> Iterator[np.ndarray]:
    """[-1, 1] images -> (H, W, 3) arrays of values in [0, 255]."""
    values = to_uint8_values(images) if quantize else (images.float() + 1.0) * 127.5
    for img in values.detach().cpu():
        yield img.permute(1, 2, 0).numpy()


def fid_from_features(feats: np.ndarray, real: FIDStats) -> float:
    """Frechet distance between generated features and real statistics."""
    gen = feature_statistics(feats)
    return float(frechet_distance(gen.mu, gen.sigma, real.mu, real.sigma))


def fid_from_images(
    images: torch.Tensor,
    real: FIDStats,
    extractor: FeatureExtractor,
    *,
    quantize: bool = True,
    batch_size: int = 64,
) -> float:
    """FID of generated images (N, 3, H, W) in [-1, 1] against real statistics."""
    return fid_from_features(
        extract_features(_generated(images, quantize), extractor, batch_size), real
    )


def fid_from_generator(
    sample_fn: Callable[[int], torch.Tensor],
    n_gen: int,
    real: FIDStats,
    extractor: FeatureExtractor,
    *,
    batch_size: int = 64,
    quantize: bool = True,
) -> float:
    """FID of `n_gen` images from `sample_fn(n) -> (n, 3, H, W)` in [-1, 1], drawn in batches
    so that only features are kept."""
    if n_gen < 2:
        raise ValueError(f"n_gen must be at least 2, got {n_gen}")

    def images() -> Iterator[np.ndarray]:
        done = 0
        while done < n_gen:
            n = min(batch_size, n_gen - done)
            with torch.no_grad():
                batch = sample_fn(n)
            if batch.shape[0] != n:
                raise ValueError(f"sample_fn({n}) returned {batch.shape[0]} images")
            yield from _generated(batch, quantize)
            done += n

    return fid_from_features(extract_features(images(), extractor, batch_size), real)
