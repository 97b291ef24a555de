"""CMMD (Jayasumana et al., CVPR 2024, "Rethinking FID"): the squared maximum mean discrepancy
between the CLIP embeddings of real and generated images, with a Gaussian RBF kernel.

Why beside FID: CMMD assumes no Gaussian feature distribution and its estimator is unbiased in
the sample size, which matters for few-shot targets whose full sets hold a few hundred images.

The reference, google-research/cmmd (distance.py, checked at 4c42994), fixes sigma = 10
(distance.py:25) and scales by 1000 (distance.py:28), and computes the *biased* estimator
(distance.py:35 "minimum-variance/biased version", Gretton et al. 2012 Eq. 5): the means of the
whole kernel matrices, diagonals included (distance.py:58-90). Its embeddings are unit vectors
(CLIP's `encode_image(normalize=True)`, `adaptscope.metrics.extractors.CLIPExtractor`), so
every squared distance lies in [0, 4] and every kernel value in [exp(-0.02), 1].

Everything is computed in float64 on features already extracted (N, D), e.g. the cached real-set
arrays that `adaptscope.metrics.fid.real_features` returns for the CLIP extractor, kernel
matrices in row blocks, so 5,000 x 5,000 sets need tens of MiB.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from adaptscope.metrics.feature_metrics import _pair

CMMD_SIGMA = 10.0  # google-research cmmd distance.py:25
CMMD_SCALE = 1000.0  # distance.py:28
_BLOCK_ELEMENTS = 2**22  # kernel values held per row block (32 MiB in float64)


class CMMD(NamedTuple):
    """CMMD as the reference computes it (`biased`) and its unbiased U-statistic."""

    biased: float
    unbiased: float


def _rbf_kernel_sum(a: np.ndarray, b: np.ndarray, gamma: float, *, same: bool = False) -> float:
    """sum_ij exp(-gamma |a_i - b_j|^2) over all pairs, in float64 row blocks.

    Squared distances come from the Gram expansion after centring on `b`'s mean, clipped at 0;
    with `same` (`a` is `b`) the diagonal distances are set to exactly 0, so each diagonal term
    is exactly 1 and the off-diagonal sum is this sum minus N."""
    centre = b.mean(axis=0)
    bc = b - centre
    ac = bc if same else a - centre
    nb = np.einsum("ij,ij->i", bc, bc)
    na = nb if same else np.einsum("ij,ij->i", ac, ac)
    step = max(1, _BLOCK_ELEMENTS // b.shape[0])
    total = 0.0
    for start in range(0, a.shape[0], step):
        stop = min(start + step, a.shape[0])
        d = ac[start:stop] @ bc.T
        d *= -2.0
        d += na[start:stop, None]
        d += nb[None, :]
        np.maximum(d, 0.0, out=d)
        if same:
            rows = np.arange(stop - start)
            d[rows, rows + start] = 0.0
        d *= -gamma
        np.exp(d, out=d)
        total += float(d.sum())
    return total


def cmmd(real_feats: Any, fake_feats: Any, *, sigma: float = CMMD_SIGMA,
         scale: float = CMMD_SCALE) -> CMMD:
    """CMMD between (M, D) real and (N, D) generated embeddings: (biased, unbiased).

    With k(x, y) = exp(-|x - y|^2 / (2 sigma^2)), X the real and Y the generated set:

    biased   = scale * [ 1/M^2 sum_ij k(x_i, x_j) + 1/N^2 sum_ij k(y_i, y_j)
                         - 2/(M N) sum_ij k(x_i, y_j) ]
               (the V-statistic, diagonals included: google-research cmmd distance.py:58-90)
    unbiased = scale * [ 1/(M(M-1)) sum_{i != j} k(x_i, x_j) + 1/(N(N-1)) sum_{i != j}
                         k(y_i, y_j) - 2/(M N) sum_ij k(x_i, y_j) ]
               (the U-statistic of Gretton et al. 2012, Lemma 6 / Eq. 3 [S]: the within-set
               diagonals k(x, x) = 1 left out; the form KID uses, valid for M != N)

    So biased - unbiased = scale * [(1 - A_X)/M + (1 - A_Y)/N] >= 0 exactly, A the mean
    off-diagonal kernel value of a set: the biased value overstates the distance by order
    scale * (1 - A)/M, which is not small for a few-hundred-image target set. For two
    independent draws of one distribution the unbiased value averages 0 and the biased one is
    positive. For two identical sets the biased value is exactly 0 and the unbiased one is
    -2 * scale * (1 - A)/M < 0 (its cross term keeps the pairs i = j).

    Inputs are used as given: the reference's embeddings are unit-normalised CLIP ViT-L/14-336
    image embeddings (`CLIPExtractor`); pass those. Both sets need at least 2 points.
    """
    x, y = _pair(real_feats, fake_feats)
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"CMMD's unbiased estimate needs at least 2 points in each set, got "
                         f"{m} real and {n} generated")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")
    gamma = 1.0 / (2.0 * sigma * sigma)
    s_xx = _rbf_kernel_sum(x, x, gamma, same=True)
    s_yy = _rbf_kernel_sum(y, y, gamma, same=True)
    cross = 2.0 * _rbf_kernel_sum(x, y, gamma) / (m * n)
    biased = s_xx / (m * m) + s_yy / (n * n) - cross
    unbiased = (s_xx - m) / (m * (m - 1)) + (s_yy - n) / (n * (n - 1)) - cross
    return CMMD(float(scale * biased), float(scale * unbiased))
