"""Feature-array metrics: parity with torch-fidelity 0.4.0 (KID, precision/recall) and the prdc
package, plus hand-worked examples. Expectations never come from the functions under test."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch

from adaptscope.metrics import feature_metrics as fm
from adaptscope.metrics.feature_metrics import (
    feature_memorisation,
    kid,
    memorisation,
    memorised_fraction,
    prdc,
    precision_recall,
)


def _sets(n_real: int = 160, n_fake: int = 130, dim: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n_real, dim))
    fake = 0.3 + 1.2 * rng.standard_normal((n_fake, dim))
    return real, fake


# --------------------------------------------------------------------------- KID


def _tf_kid(real, fake, **kwargs) -> tuple[float, float]:
    from torch_fidelity.metric_kid import (
        KEY_METRIC_KID_MEAN,
        KEY_METRIC_KID_STD,
        kid_features_to_metric,
    )

    # torch-fidelity's input1 is the generated set; float64 so both sides round alike
    out = kid_features_to_metric(
        torch.from_numpy(fake), torch.from_numpy(real), verbose=False, **kwargs
    )
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


@pytest.mark.parametrize("gram_elements", [fm._KID_GRAM_ELEMENTS, 0], ids=["gram", "per-subset"])
def test_kid_equals_torch_fidelity(monkeypatch, gram_elements):
    monkeypatch.setattr(fm, "_KID_GRAM_ELEMENTS", gram_elements)
    real, fake = _sets()
    for size, subsets, degree, seed in [(50, 20, 3, 7), (130, 3, 2, 2020)]:
        mean, std = kid(real, fake, subset_size=size, subsets=subsets, degree=degree, seed=seed)
        tf_mean, tf_std = _tf_kid(
            real, fake, kid_subset_size=size, kid_subsets=subsets,
            kid_kernel_poly_degree=degree, rng_seed=seed,
        )
        assert mean > 0.01 and std > 0
        assert mean == pytest.approx(tf_mean, rel=1e-10, abs=1e-12)
        assert std == pytest.approx(tf_std, rel=1e-8, abs=1e-12)


def test_kid_default_subset_size_fits_small_sets():
    real, fake = _sets(n_real=60, n_fake=90)
    mean, std = kid(real, fake, subsets=5, seed=3)  # min(1000, 60, 90) = 60
    tf_mean, tf_std = _tf_kid(real, fake, kid_subset_size=60, kid_subsets=5, rng_seed=3)
    assert (mean, std) == pytest.approx((tf_mean, tf_std), rel=1e-10, abs=1e-12)


def test_kid_accepts_tensors():
    real, fake = _sets(n_real=40, n_fake=40)
    expected = kid(real.astype(np.float32), fake.astype(np.float32), subsets=4)
    got = kid(torch.from_numpy(real).float(), torch.from_numpy(fake).float(), subsets=4)
    assert got == expected


def test_kid_hand_example():
    """3 vs 3 points in 2-D, one subset of all 3: MMD^2 by the formula, in exact fractions."""
    x = [(0, 0), (1, 0), (0, 1)]
    y = [(1, 1), (2, 0), (0, 2)]

    def k(a, b):
        return (Fraction(a[0] * b[0] + a[1] * b[1], 2) + 1) ** 3

    m = 3
    xx = sum(k(a, b) for a, b in itertools.permutations(x, 2))
    yy = sum(k(a, b) for a, b in itertools.permutations(y, 2))
    xy = sum(k(a, b) for a in x for b in y)
    expected = (xx + yy) / (m * (m - 1)) - 2 * xy / (m * m)
    assert expected == Fraction(1, 2)  # 6 and 34 off-diagonal, 111/4 cross: 40/6 - 111/18
    mean, std = kid(np.array(y, float), np.array(x, float), subset_size=3, subsets=1)
    assert mean == pytest.approx(0.5, abs=1e-14)
    assert std == 0.0


def test_kid_identical_sets_is_near_zero():
    """With X = Y and subsets covering the whole set, every subset pair is a permutation pair:
    the unbiased estimate is the constant 2 (S_off / (n (n - 1)) - S_all / n^2), O(1/n)."""
    real, _ = _sets(n_real=80)
    mean, std = kid(real, real, subset_size=80, subsets=4)
    kk = (real @ real.T / real.shape[1] + 1) ** 3
    s_all, s_diag, n = kk.sum(), np.trace(kk), 80
    expected = 2 * ((s_all - s_diag) / (n * (n - 1)) - s_all / n**2)
    assert mean == pytest.approx(expected, rel=1e-9)
    assert std < 1e-12
    assert abs(mean) < 2 * kk.max() / n
    # independent sets from one distribution sit far below a shifted pair
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 300, 12))
    same, _ = kid(a, b, subset_size=150, subsets=10)
    shifted, _ = kid(a, b + 0.5, subset_size=150, subsets=10)
    assert abs(same) < 0.05 * shifted


def test_kid_subset_larger_than_a_set_names_the_sizes():
    real, fake = _sets(n_real=40, n_fake=30)
    with pytest.raises(ValueError, match=r"subset_size=35.*real: 40, fake: 30.*<= 30"):
        kid(real, fake, subset_size=35)
    with pytest.raises(ValueError, match="dimension"):
        kid(real, fake[:, :5])


# --------------------------------------------------------------------------- PRDC


def _reference_prdc(real, fake, k):
    from prdc import compute_prdc

    return compute_prdc(real_features=real, fake_features=fake, nearest_k=k)


@pytest.mark.parametrize("k", [3, 5])
def test_prdc_equals_prdc_package(monkeypatch, k):
    real, fake = _sets(n_real=200, n_fake=170)
    expected = _reference_prdc(real, fake, k)
    got = prdc(real, fake, k=k)
    assert set(got) == {"precision", "recall", "density", "coverage"}
    for key in got:
        assert 0 < got[key]
        assert got[key] == pytest.approx(float(expected[key]), abs=1e-12), key
    # row blocks of 7 real points: the same numbers
    monkeypatch.setattr(fm, "_BLOCK_ELEMENTS", 7 * 200)
    assert prdc(real, fake, k=k) == got


def test_prdc_hand_cases():
    real, _ = _sets(n_real=50)
    # fake = real: every point in its own ball; no ties, so each point lies in exactly its own
    # ball and k - 1 others (strict): density = (1 + k - 1) / k = 1
    assert prdc(real, real.copy(), k=5) == {
        "precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0
    }
    assert precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
    far = prdc(real, real + 1e3, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    assert precision_recall(real, real + 1e3) == (0.0, 0.0)
    with pytest.raises(ValueError, match="k=5.*N=5"):
        prdc(real, real[:5], k=5)


def test_ball_boundary_strict_for_prdc_inclusive_for_precision_recall():
    """1-D, k=1: real 0..4 have radius 1, fake {5, 10, 15} radius 5. Fake 5 lies exactly on
    real 4's ball, real 0 exactly on fake 5's ball: prdc (`<`) leaves both out, Kynkaanniemi's
    precision/recall (`<=`, torch-fidelity) takes both in. All distances are exact here."""
    real = np.arange(5.0)[:, None]
    fake = np.array([[5.0], [10.0], [15.0]])
    assert prdc(real, fake, k=1) == {
        "precision": 0.0, "recall": 0.8, "density": 0.0, "coverage": 0.0
    }
    assert {k: float(v) for k, v in _reference_prdc(real, fake, 1).items()} == prdc(
        real, fake, k=1
    )
    assert precision_recall(real, fake, k=1) == (1 / 3, 1.0)
    assert _tf_precision_recall(real, fake, 1) == pytest.approx((1 / 3, 1.0), abs=1e-7)


def _tf_precision_recall(real, fake, k):
    from torch_fidelity.metric_prc import (
        KEY_METRIC_PRECISION,
        KEY_METRIC_RECALL,
        prc_features_to_metric,
    )

    out = prc_features_to_metric(
        torch.from_numpy(fake), torch.from_numpy(real), prc_neighborhood=k, verbose=False
    )
    return out[KEY_METRIC_PRECISION], out[KEY_METRIC_RECALL]


def test_precision_recall_equals_torch_fidelity():
    real, fake = _sets(n_real=200, n_fake=170, dim=8, seed=1)
    expected = _tf_precision_recall(real, fake, 3)
    got = precision_recall(real, fake, k=3)
    assert 0 < got[0] < 1 and 0 < got[1] < 1
    # torch-fidelity averages in float32: equal counts, fractions equal to float32 rounding
    assert [round(g * n) for g, n in zip(got, (170, 200), strict=True)] == [
        round(e * n) for e, n in zip(expected, (170, 200), strict=True)
    ]
    assert got == pytest.approx(expected, abs=1e-7)
    # and the same radii as prdc: away from ties, prdc's precision/recall at k=3 agree
    p = _reference_prdc(real, fake, 3)
    assert got == pytest.approx((p["precision"], p["recall"]), abs=1e-12)


# --------------------------------------------------------------------------- memorisation

SHOTS = np.array([0.0, 10.0, 30.0])  # nearest other shot: 10, 10, 20
SAMPLES = np.array([0.0, 4.9, 5.0, 12.0, 21.0, 19.0, 38.0, 41.0, -6.0])
# ratio 0.5 -> thresholds 5, 5, 10. Nearest shot and distance of each sample:
#   0 (0, 0) yes | 4.9 (0, 4.9) yes | 5.0 (0 by index, 5) no: not < 5 | 12 (10, 2) yes
#   21 (30, 9) yes | 19 (10, 9) no | 38 (30, 8) yes | 41 (30, 11) no | -6 (0, 6) no  -> 5/9
# ratio 1 -> thresholds 10, 10, 20: every sample is memorised -> 9/9


def test_memorised_fraction_hand_example():
    to_shot = np.abs(SAMPLES[:, None] - SHOTS[None, :])
    shot_shot = np.abs(SHOTS[:, None] - SHOTS[None, :])
    assert memorised_fraction(to_shot, shot_shot) == pytest.approx(5 / 9)
    assert memorised_fraction(to_shot, shot_shot, ratio=1.0) == 1.0
    assert memorised_fraction(to_shot, shot_shot, ratio=0.25) == pytest.approx(2 / 9)  # 0, 12
    detail = memorisation(to_shot, shot_shot)
    assert detail.memorised.tolist() == [True, True, False, True, True, False, True, False,
                                         False]
    assert detail.nearest_shot.tolist() == [0, 0, 0, 1, 2, 1, 2, 2, 0]
    assert detail.threshold.tolist() == [5.0, 5.0, 10.0]
    assert detail.per_shot.tolist() == [2, 1, 2]
    with pytest.raises(ValueError, match="at least 2 shots"):
        memorised_fraction(to_shot[:, :1], shot_shot[:1, :1])


def test_feature_memorisation_places_the_line_in_feature_space():
    direction = np.array([2.0, 3.0, 6.0]) / 7.0  # unit length
    offset = np.array([1.0, -2.0, 0.5])
    shots = offset + SHOTS[:, None] * direction
    # without the sample at 5.0, exactly on the boundary: rounding decides it off the line
    samples = offset + np.delete(SAMPLES, 2)[:, None] * direction
    assert feature_memorisation(samples, shots) == pytest.approx(5 / 8)
    assert feature_memorisation(torch.from_numpy(samples), torch.from_numpy(shots),
                                ratio=1.0) == 1.0
    assert feature_memorisation(samples, shots, ratio=0.25) == pytest.approx(2 / 8)
