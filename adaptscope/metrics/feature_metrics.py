"""Metrics from (N, D) feature arrays, no network: KID, precision/recall/density/coverage, and
memorisation of the training shots (a shot-spacing threshold, and Gu et al.'s nearest-neighbour
ratio rule). CMMD, an MMD with a Gaussian kernel, is in `adaptscope.metrics.cmmd`.

Every function takes numpy arrays (or torch tensors, converted) and computes in float64. The
reference each one reproduces is named in its docstring with the file and line it was checked
against; `tests/test_feature_metrics.py` holds the parity tests.

Conventions: `real` is the target set, `fake` the generated samples. Euclidean distances come
from the float64 Gram expansion |a|^2 + |b|^2 - 2 a.b (after centring, clipped at 0), in row
blocks, so 5,000 x 5,000 x 2048 features need tens of MiB beyond the features themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_BLOCK_ELEMENTS = 2**22  # distances held per row block (32 MiB in float64)
_KID_GRAM_ELEMENTS = 25 * 10**6  # KID: whole-set kernel matrices up to this size (200 MiB each)


# --------------------------------------------------------------------------- inputs


def _features(x: Any, name: str) -> np.ndarray:
    """(N, D) float64 C-contiguous copy-if-needed of an array or tensor; finite values only."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be an (N, D) feature array, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return a


def _pair(real: Any, fake: Any) -> tuple[np.ndarray, np.ndarray]:
    r, f = _features(real, "real"), _features(fake, "fake")
    if r.shape[1] != f.shape[1]:
        raise ValueError(
            f"real and fake features differ in dimension: {r.shape[1]} vs {f.shape[1]}"
        )
    return r, f


# --------------------------------------------------------------------------- distances


def _distance_blocks(
    a: np.ndarray, b: np.ndarray, *, exclude_self: bool = False
) -> Iterator[tuple[slice, np.ndarray]]:
    """Euclidean distances from row blocks of `a` to all rows of `b`: (slice, (rows, Nb)).

    With `exclude_self` (`a` is `b`) each row's distance to itself is set to +inf, so order
    statistics of a row range over the OTHER points only."""
    centre = b.mean(axis=0)
    bc = b - centre
    ac = bc if exclude_self else a - centre
    nb = np.einsum("ij,ij->i", bc, bc)
    na = nb if exclude_self else np.einsum("ij,ij->i", ac, ac)
    step = max(1, _BLOCK_ELEMENTS // b.shape[0])
    for start in range(0, a.shape[0], step):
        stop = min(start + step, a.shape[0])
        d = ac[start:stop] @ bc.T
        d *= -2.0
        d += na[start:stop, None]
        d += nb[None, :]
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
        if exclude_self:
            rows = np.arange(stop - start)
            d[rows, rows + start] = np.inf
        yield slice(start, stop), d


def _cdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All Euclidean distances (Na, Nb), float64."""
    out = np.empty((a.shape[0], b.shape[0]))
    for rows, d in _distance_blocks(a, b):
        out[rows] = d
    return out


def _knn_radii(x: np.ndarray, k: int, name: str) -> np.ndarray:
    """Distance of every row to its k-th nearest OTHER row (N,): the k-NN ball radius of
    Kynkaanniemi et al. 2019, the same number as prdc's k+1-th value with self included
    (prdc/prdc.py:50) and torch-fidelity's `kthvalue(neighborhood + 1)` (metric_prc.py:58)."""
    n = x.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k={k} needs 1 <= k <= N - 1, but {name} holds N={n} points")
    radii = np.empty(n)
    for rows, d in _distance_blocks(x, x, exclude_self=True):
        radii[rows] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return radii


@dataclass(frozen=True)
class _Manifolds:
    real_radii: np.ndarray  # (Nr,) k-NN radius of each real point
    fake_in_real: np.ndarray  # (Nf,) number of real balls each fake point lies in
    real_in_fake: np.ndarray  # (Nr,) whether each real point lies in some fake ball
    nearest_fake: np.ndarray  # (Nr,) distance of each real point to its nearest fake point


def _manifolds(real: np.ndarray, fake: np.ndarray, k: int, *, inclusive: bool) -> _Manifolds:
    """The k-NN manifold facts behind precision, recall, density and coverage, in one pass over
    real x fake distances. A point is inside a ball when its distance is `<=` the radius
    (`inclusive`, Kynkaanniemi's reference and torch-fidelity) or `<` (prdc)."""
    real_radii = _knn_radii(real, k, "real")
    fake_radii = _knn_radii(fake, k, "fake")
    inside = np.less_equal if inclusive else np.less
    fake_in_real = np.zeros(fake.shape[0], dtype=np.int64)
    real_in_fake = np.empty(real.shape[0], dtype=bool)
    nearest_fake = np.empty(real.shape[0])
    for rows, d in _distance_blocks(real, fake):
        fake_in_real += inside(d, real_radii[rows, None]).sum(axis=0)
        real_in_fake[rows] = inside(d, fake_radii[None, :]).any(axis=1)
        nearest_fake[rows] = d.min(axis=1)
    return _Manifolds(real_radii, fake_in_real, real_in_fake, nearest_fake)


# --------------------------------------------------------------------------- KID


def _poly_kernel(x: np.ndarray, y: np.ndarray, degree: int) -> np.ndarray:
    """(x.y * gamma + 1) ** degree with gamma = 1 / D, as torch-fidelity's kernel_poly
    (metric_kid.py:63-70, defaults gamma None -> 1/D, coef0 1)."""
    k = x @ y.T
    k *= 1.0 / x.shape[1]
    k += 1.0
    k **= degree
    return k


def _unbiased_mmd2(
    off_xx: np.ndarray | float, off_yy: np.ndarray | float, xy: np.ndarray | float, m: int
) -> np.ndarray | float:
    """Unbiased MMD^2 from kernel sums over a subset pair of size m (off-diagonal sums of the
    within-set kernels, full sum of the cross kernel): torch-fidelity metric_kid.py:54-56."""
    return (off_xx + off_yy) / (m * (m - 1)) - 2.0 * xy / (m * m)


def kid(
    real: Any,
    fake: Any,
    *,
    subset_size: int | None = None,
    subsets: int = 100,
    degree: int = 3,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased
    MMD^2 with the polynomial kernel k(x, y) = (x.y / D + 1)^degree, averaged over `subsets`
    random subset pairs of `subset_size` points from each set. Returns (mean, std); std has
    ddof=0 (np.std, torch-fidelity metric_kid.py:129).

    Subsets are drawn as torch-fidelity's `kid_features_to_metric` draws them
    (metric_kid.py:117-123): `np.random.RandomState(seed)`, then per subset a `choice(...,
    replace=False)` from the FAKE set first and from the real set second (torch-fidelity's
    input1 is the generated set). So `kid(real, fake, seed=s)` equals
    `kid_features_to_metric(fake, real, rng_seed=s)` on float64 features. (RandomState rather
    than a Generator: its stream is frozen by NumPy's compatibility policy, and it is the
    reference's.) `subset_size=None` means min(1000, len(real), len(fake)), so a 300-image
    target set works; a larger subset than either set raises ValueError.

    Kernel values are computed once for the whole sets when each of the three kernel matrices
    (held one at a time) fits in 200 MiB, up to 5,000 x 5,000, and summed per subset with 0/1
    weight vectors; otherwise (e.g. 50k generated images) they are computed per subset."""
    r, f = _pair(real, fake)
    n_r, n_f = r.shape[0], f.shape[0]
    m = min(1000, n_r, n_f) if subset_size is None else int(subset_size)
    if m > n_r or m > n_f:
        raise ValueError(
            f"KID subset_size={m} is larger than a feature set (real: {n_r}, fake: {n_f}); "
            f"pass subset_size <= {min(n_r, n_f)}, or subset_size=None for "
            f"min(1000, {n_r}, {n_f}) = {min(1000, n_r, n_f)}"
        )
    if m < 2:
        raise ValueError(f"KID needs subset_size >= 2 (real: {n_r}, fake: {n_f}), got {m}")
    if subsets < 1:
        raise ValueError(f"subsets must be at least 1, got {subsets}")
    if int(degree) != degree or degree < 1:
        raise ValueError(f"degree must be a positive integer, got {degree}")
    degree = int(degree)

    rng = np.random.RandomState(seed)
    draws = [
        (rng.choice(n_f, m, replace=False), rng.choice(n_r, m, replace=False))
        for _ in range(subsets)
    ]

    if max(n_f, n_r) ** 2 <= _KID_GRAM_ELEMENTS:
        wf = np.zeros((n_f, subsets))
        wr = np.zeros((n_r, subsets))
        for s, (i_f, i_r) in enumerate(draws):
            wf[i_f, s] = 1.0
            wr[i_r, s] = 1.0

        def subset_sums(k: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
            return np.einsum("is,is->s", w1, k @ w2)

        k_ff = _poly_kernel(f, f, degree)
        off_ff = subset_sums(k_ff, wf, wf) - wf.T @ np.diagonal(k_ff)
        del k_ff
        k_rr = _poly_kernel(r, r, degree)
        off_rr = subset_sums(k_rr, wr, wr) - wr.T @ np.diagonal(k_rr)
        del k_rr
        xy = subset_sums(_poly_kernel(f, r, degree), wf, wr)
        mmds = np.asarray(_unbiased_mmd2(off_ff, off_rr, xy, m))
    else:
        mmds = np.empty(subsets)
        for s, (i_f, i_r) in enumerate(draws):
            x, y = f[i_f], r[i_r]
            k_xx = _poly_kernel(x, x, degree)
            k_yy = _poly_kernel(y, y, degree)
            mmds[s] = _unbiased_mmd2(
                k_xx.sum() - np.trace(k_xx),
                k_yy.sum() - np.trace(k_yy),
                _poly_kernel(x, y, degree).sum(),
                m,
            )
    return float(mmds.mean()), float(mmds.std())


# --------------------------------------------------------------------------- PRDC


def prdc(real: Any, fake: Any, *, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage at one k, exactly as the prdc package's
    `compute_prdc(real, fake, nearest_k=k)` (Naeem et al. 2020, prdc/prdc.py:54-97).

    k-NN radius = distance to the k-th nearest OTHER point of the same set. precision: fraction
    of fake points inside some real ball; recall: fraction of real points inside some fake ball
    (Kynkaanniemi et al. 2019); density: mean over fake points of (number of real balls
    containing it) / k; coverage: fraction of real points whose nearest fake point is inside
    their own ball (Naeem et al. 2020). "Inside" is strict (`<`), as in prdc. Naeem et al.
    report density/coverage at k=5; for Kynkaanniemi's precision/recall at k=3 use
    `precision_recall`."""
    r, f = _pair(real, fake)
    mf = _manifolds(r, f, k, inclusive=False)
    return {
        "precision": float((mf.fake_in_real > 0).mean()),
        "recall": float(mf.real_in_fake.mean()),
        "density": float(mf.fake_in_real.sum() / (k * f.shape[0])),
        "coverage": float((mf.nearest_fake < mf.real_radii).mean()),
    }


def precision_recall(real: Any, fake: Any, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN balls, k=3 as in the
    paper: (fraction of fake points inside some real ball, fraction of real points inside some
    fake ball). "Inside" is `<=` as in the authors' code and torch-fidelity 0.4.0
    (`calculate_precision_recall_full`, metric_prc.py:57-66, where features_1 is the
    generated set); the same k-NN radii as `prdc`, which uses `<` (the two differ only for
    points exactly on a ball's boundary)."""
    r, f = _pair(real, fake)
    mf = _manifolds(r, f, k, inclusive=True)
    return float((mf.fake_in_real > 0).mean()), float(mf.real_in_fake.mean())


# --------------------------------------------------------------------------- memorisation


@dataclass(frozen=True)
class Memorisation:
    """Which samples replicate a training shot, and the facts the rule used."""

    fraction: float  # memorised samples / all samples
    memorised: np.ndarray  # (N,) bool
    nearest_shot: np.ndarray  # (N,) index of each sample's nearest shot
    distance: np.ndarray  # (N,) distance to that shot
    threshold: np.ndarray  # (K,) ratio x each shot's distance to its nearest other shot

    @property
    def per_shot(self) -> np.ndarray:
        """(K,) number of memorised samples per shot: which shots are being replicated."""
        return np.bincount(self.nearest_shot[self.memorised], minlength=self.threshold.shape[0])


def shot_thresholds(shot_to_shot: Any, *, ratio: float = 0.5) -> np.ndarray:
    """(K,) `ratio` x each shot's distance to its nearest OTHER shot (row j, diagonal ignored)."""
    d = np.array(shot_to_shot, dtype=np.float64)  # a copy: the diagonal is overwritten
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"shot_to_shot must be a (K, K) distance matrix, got shape {d.shape}")
    if d.shape[0] < 2:
        raise ValueError("memorisation needs at least 2 shots: the threshold is the distance "
                         "from a shot to its nearest other shot")
    if not np.isfinite(d).all() or (d < 0).any():
        raise ValueError("shot_to_shot must hold finite, non-negative distances")
    if not (np.isfinite(ratio) and ratio > 0):
        raise ValueError(f"ratio must be a positive number, got {ratio}")
    np.fill_diagonal(d, np.inf)
    return ratio * d.min(axis=1)


def memorisation(sample_to_shot: Any, shot_to_shot: Any, *, ratio: float = 0.5) -> Memorisation:
    """Memorisation of the training shots in any metric space (LPIPS, feature Euclidean...).

    Rule: a sample is memorised when its distance to its nearest shot j is smaller than
    `ratio` x (distance from shot j to its nearest other shot). The scale is set by the shots
    themselves, so one `ratio` serves LPIPS and feature spaces alike.

    Why ratio = 0.5 by default. (1) With ratio <= 0.5 the balls around the shots are pairwise
    disjoint (r_j + r_l <= d(j, l)), and a sample inside shot j's ball is strictly nearer to j
    than to any other shot, so "which shot is replicated" is unambiguous. (2) A diverse
    generator - one drawing fresh images from the target distribution - sits, by
    exchangeability, about as far from its nearest shot as the shots sit from each other. With
    K = 10 or 100 shots and fresh samples from the same standard Gaussian, ratio 1 flags
    20-60% of these genuinely new samples (any dimension, 2 to 2048), ratio 0.5 flags 24% at
    D=2, 1% at D=8 and 0% from D=16 on (the intrinsic dimension of image features is well
    above that). Shot copies perturbed by 0.3 (0.45) of the mean nearest-shot gap are flagged
    at 71-100% (58-100%). So at 0.5 the fraction stays ~0 for a diverse generator and rises
    toward 1 as a method collapses onto the shots; smaller ratios flag only near-copies."""
    thr = shot_thresholds(shot_to_shot, ratio=ratio)
    d = np.asarray(sample_to_shot, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] != thr.shape[0] or d.shape[0] == 0:
        raise ValueError(
            f"sample_to_shot must be (N, K) with K={thr.shape[0]} shots and N >= 1, "
            f"got shape {d.shape}"
        )
    if not np.isfinite(d).all() or (d < 0).any():
        raise ValueError("sample_to_shot must hold finite, non-negative distances")
    nearest = d.argmin(axis=1)
    dist = d[np.arange(d.shape[0]), nearest]
    memorised = dist < thr[nearest]
    return Memorisation(float(memorised.mean()), memorised, nearest, dist, thr)


def memorised_fraction(sample_to_shot: Any, shot_to_shot: Any, *, ratio: float = 0.5) -> float:
    """Fraction of samples that replicate a shot, from (N, K) sample-to-shot and (K, K)
    shot-to-shot distances in any metric space; the rule is `memorisation`'s."""
    return memorisation(sample_to_shot, shot_to_shot, ratio=ratio).fraction


def feature_memorisation(fake_feats: Any, shot_feats: Any, *, ratio: float = 0.5) -> float:
    """`memorised_fraction` with Euclidean distances between (N, D) generated and (K, D) shot
    features."""
    f = _features(fake_feats, "fake_feats")
    s = _features(shot_feats, "shot_feats")
    if f.shape[1] != s.shape[1]:
        raise ValueError(f"fake_feats and shot_feats differ in dimension: {f.shape[1]} vs "
                         f"{s.shape[1]}")
    return memorised_fraction(_cdist(f, s), _cdist(s, s), ratio=ratio)


# --------------------------------------------------------------------------- Gu et al.'s copies

GU_RATIO = 1.0 / 3.0  # sail-sg/DiffMemorize mem_ratio.py:162


def gu_copies(sample_to_shot: Any, *, ratio: float = GU_RATIO) -> np.ndarray:
    """(N,) bool: which samples are copies of a training shot by the nearest-neighbour ratio
    rule of Gu et al. ("On Memorization in Diffusion Models", arXiv 2310.02664, TMLR 2025):
    a sample is a copy when d1 / d2 < ratio, d1 and d2 its distances to its nearest and
    second-nearest shot, ratio = 1/3.

    Source [C]: the authors' code, github.com/sail-sg/DiffMemorize @ 39efb7c, mem_ratio.py:118
    (L2 distances to every training image), :120 (the two smallest), :162 (`(knn_distance[:, 0]
    / knn_distance[:, 1]) < 1/3`). [S] their paper states the criterion, after Yoon et al. 2023
    ("Diffusion probabilistic models generalize when they fail to memorize"); not re-read here.
    [U] that Uni-DAD or CRDI use it: neither codebase computes it.

    Unlike `memorisation`, whose threshold is set by the shots' spacing, this rule needs no
    shot-to-shot distances: a sample must be three times nearer one shot than any other. It
    holds in any metric space: (N, K) Euclidean distances of FID features
    (`gu_feature_memorisation`) or LPIPS distances (`IntraLPIPSResult.sample_to_shot`).

    Boundaries, as in the reference: the inequality is strict (d1 = d2 / 3 is not a copy); a
    sample equally near two shots (d1 = d2) is not a copy; when d2 = 0 (two identical shots
    and the sample on them) the reference's 0 / 0 is NaN and NaN < 1/3 is false, so it is not
    a copy either (which shot it copies cannot be told).
    """
    d = np.asarray(sample_to_shot, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] == 0:
        raise ValueError(f"sample_to_shot must be an (N, K) distance matrix with N >= 1, got "
                         f"shape {d.shape}")
    if d.shape[1] < 2:
        raise ValueError(f"the nearest-neighbour ratio rule needs at least 2 shots (it divides "
                         f"the distance to the nearest shot by that to the second-nearest), got "
                         f"K = {d.shape[1]}")
    if not np.isfinite(d).all() or (d < 0).any():
        raise ValueError("sample_to_shot must hold finite, non-negative distances")
    if not (np.isfinite(ratio) and 0 < ratio <= 1):
        raise ValueError(f"ratio must be in (0, 1] (d1 / d2 never exceeds 1), got {ratio}")
    two = np.partition(d, 1, axis=1)[:, :2]
    d1, d2 = two[:, 0], two[:, 1]
    quotient = np.divide(d1, d2, out=np.full(d1.shape, np.inf), where=d2 > 0)
    return quotient < ratio


def gu_memorised_fraction(sample_to_shot: Any, *, ratio: float = GU_RATIO) -> float:
    """Fraction of samples that are copies of a shot by `gu_copies`' rule, from (N, K)
    sample-to-shot distances in any metric space (FID-feature Euclidean, LPIPS)."""
    return float(gu_copies(sample_to_shot, ratio=ratio).mean())


def gu_feature_memorisation(fake_feats: Any, shot_feats: Any, *,
                            ratio: float = GU_RATIO) -> float:
    """`gu_memorised_fraction` with Euclidean distances between (N, D) generated and (K, D)
    shot features (the FID features the evaluator already holds)."""
    f = _features(fake_feats, "fake_feats")
    s = _features(shot_feats, "shot_feats")
    if f.shape[1] != s.shape[1]:
        raise ValueError(f"fake_feats and shot_feats differ in dimension: {f.shape[1]} vs "
                         f"{s.shape[1]}")
    return gu_memorised_fraction(_cdist(f, s), ratio=ratio)
