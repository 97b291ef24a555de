"""Gu et al.'s copy rule: a sample copies a shot when its distance to its nearest shot is under
1/3 of its distance to its second-nearest (strictly). Expected answers are read off distance
matrices and point sets built by hand, never computed with the functions under test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptscope.embedded.toynet import load_toynet
from adaptscope.images import from_uint8, to_uint8
from adaptscope.metrics.feature_metrics import (
    GU_RATIO,
    gu_copies,
    gu_feature_memorisation,
    gu_memorised_fraction,
)
from adaptscope.metrics.intra_lpips import nearest_shots
from adaptscope.track.target import load_target

# (distances to 3 shots, copy?) -- d1 and d2 are the two smallest of each row
ROWS = [
    ([0.1, 0.5, 0.9], True),  # 0.1 / 0.5 = 0.2
    ([1.0, 3.0, 5.0], False),  # exactly 1/3: the inequality is strict
    ([2.0, 6.0, 6.0], False),  # exactly 1/3 again, the second distance tied
    ([0.99, 3.0, 4.0], True),  # 0.33 < 1/3, just inside
    ([0.3, 0.3, 2.0], False),  # equally near two shots: d1 / d2 = 1
    ([0.0, 0.0, 1.0], False),  # on two identical shots: 0 / 0, which shot cannot be told
    ([0.0, 2.0, 2.0], True),  # on one shot, away from the others
    ([2.0, 0.5, 1.6], True),  # the nearest is not the first column: 0.5 / 1.6 = 0.3125
    ([4.0, 9.0, 1.2], True),  # the two smallest are 1.2 and 4.0: 0.3
]


def test_the_rule_on_a_hand_built_matrix():
    d = np.array([r for r, _ in ROWS])
    expected = np.array([c for _, c in ROWS])
    np.testing.assert_array_equal(gu_copies(d), expected)
    assert gu_memorised_fraction(d) == pytest.approx(expected.sum() / len(ROWS))  # 5 / 9
    assert expected.sum() == 5
    # The order of the shots (columns) does not matter.
    np.testing.assert_array_equal(gu_copies(d[:, [2, 0, 1]]), expected)


def test_the_default_ratio_is_one_third_and_the_ratio_is_a_parameter():
    assert GU_RATIO == 1 / 3
    d = np.array([r for r, _ in ROWS])
    # At 1/2 the two exact-1/3 rows become copies (1/3 < 1/2); the ties (ratio 1) and the
    # 0 / 0 row still are not.
    loose = np.array([c for _, c in ROWS])
    loose[[1, 2]] = True
    np.testing.assert_array_equal(gu_copies(d, ratio=0.5), loose)
    # At 1/4 only rows with d1 / d2 < 1/4: 0.2 (row 0) and 0 (row 6).
    strict = np.zeros(len(ROWS), dtype=bool)
    strict[[0, 6]] = True
    np.testing.assert_array_equal(gu_copies(d, ratio=0.25), strict)


def test_two_shots_suffice_and_fewer_are_refused():
    np.testing.assert_array_equal(gu_copies([[1.0, 4.0], [1.0, 2.0]]), [True, False])
    with pytest.raises(ValueError, match="at least 2 shots"):
        gu_copies(np.ones((5, 1)))
    with pytest.raises(ValueError, match="at least 2 shots"):
        gu_feature_memorisation(np.zeros((4, 3)), np.zeros((1, 3)))


@pytest.mark.parametrize(("d", "kwargs", "message"), [
    (np.ones(3), {}, r"\(N, K\)"),
    (np.ones((0, 3)), {}, r"\(N, K\)"),
    (np.array([[0.1, np.nan]]), {}, "finite"),
    (np.array([[0.1, -1.0]]), {}, "non-negative"),
    (np.array([[0.1, 1.0]]), {"ratio": 0.0}, "ratio"),
    (np.array([[0.1, 1.0]]), {"ratio": 1.5}, "ratio"),
])
def test_bad_inputs_are_refused(d, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gu_copies(d, **kwargs)


def test_features_wrapper_uses_euclidean_distances():
    # Shots at (0, 0), (10, 0), (0, 10). Each sample's two nearest distances, by hand:
    shots = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    samples = np.array([
        [1.0, 0.0],  # 1 and 9: copy of shot 0
        [2.0, 0.0],  # 2 and 8: 0.25, copy
        [3.0, 0.0],  # 3 and 7: 0.43, not
        [5.0, 0.0],  # 5 and 5: tie, not
        [9.0, 0.0],  # 1 and 9 (to shot 1): copy
        [5.0, 5.0],  # sqrt(50) and sqrt(50): not
        [0.0, 10.0],  # on shot 2: copy
        [4.0, 4.0],  # sqrt(32) and sqrt(52): 0.78, not
    ])
    assert gu_feature_memorisation(samples, shots) == pytest.approx(4 / 8)
    # float32 arrays and tensors (the evaluator's cached features) give the same
    assert gu_feature_memorisation(torch.from_numpy(samples.astype(np.float32)),
                                   shots.astype(np.float32)) == pytest.approx(4 / 8)
    assert gu_feature_memorisation(samples, shots, ratio=0.5) == pytest.approx(5 / 8)
    with pytest.raises(ValueError, match="dimension"):
        gu_feature_memorisation(samples, np.zeros((3, 4)))


def test_lpips_sample_to_shot_distances_flag_exact_copies(one_thread):
    """The evaluator's LPIPS distances (`nearest_shots(...).sample_to_shot`, the same matrix
    as `IntraLPIPSResult.sample_to_shot`): exact copies of shots are at LPIPS 0 from their shot
    and copies; images of other people are not."""
    target = load_target("toyfaces:sunglasses", 16, shots=4, seed=0)
    others = np.setdiff1d(np.arange(len(target.full)), target.shot_indices)[:6]
    samples = from_uint8(to_uint8(torch.cat([target.shots[:2], target.full[others]])))
    nearest = nearest_shots(samples, target.shots, load_toynet(), seed=0)
    d = nearest.sample_to_shot
    assert d.shape == (8, 4)
    copies = gu_copies(d)
    assert copies[:2].all()
    # the others by hand from the same matrix: nearest under 1/3 of the second-nearest
    two = np.sort(d[2:], axis=1)[:, :2]
    np.testing.assert_array_equal(copies[2:], two[:, 0] * 3 < two[:, 1])
    assert gu_memorised_fraction(d) == pytest.approx(copies.mean())
