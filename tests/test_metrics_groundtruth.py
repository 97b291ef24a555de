"""Ground-truth diversity measures on hand-made attribute arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptscope.embedded import toyfaces
from adaptscope.embedded.groundtruth import (
    COVERAGE_ATTRIBUTES,
    attribute_coverage,
    shot_replication,
)


def test_coverage_counts_distinct_reference_combinations():
    reference = np.array([[0, 0, 9], [0, 1, 9], [1, 0, 9], [1, 1, 8], [0, 0, 7]])
    generated = np.array([[0, 0, 1], [0, 0, 2], [1, 1, 3], [2, 2, 0]])  # [2, 2] not in reference
    # Over columns 0 and 1 the reference has 4 combinations; 2 of them are generated.
    assert attribute_coverage(generated, reference, attributes=[0, 1]) == pytest.approx(0.5)
    # Over all columns none of the 5 reference rows is generated exactly.
    assert attribute_coverage(generated, reference, attributes=None) == 0.0
    assert attribute_coverage(torch.as_tensor(reference), reference, [0, 1]) == 1.0


def test_default_subset_is_observable_everywhere_and_small():
    names = toyfaces.ATTRIBUTE_NAMES
    for domain in toyfaces.DOMAINS:
        shown = toyfaces.observable(domain)
        assert all(shown[names.index(a)] for a in COVERAGE_ATTRIBUTES)
    combos = np.prod([toyfaces.ATTRIBUTES[names.index(a)].levels for a in COVERAGE_ATTRIBUTES])
    assert 20 <= combos <= 200  # well below the 1,000 samples of the protocol

    reference = toyfaces.attributes("babies", np.arange(100_000, 101_000))
    assert attribute_coverage(reference, reference) == 1.0
    collapsed = np.repeat(reference[:10], 100, axis=0)  # a generator replicating 10 images
    assert attribute_coverage(collapsed, reference) <= 10 / combos + 1e-12


def test_shot_replication_uses_the_full_vector_by_default():
    shots = np.array([[1, 2, 3], [4, 5, 6]])
    generated = np.array([[1, 2, 3], [1, 2, 0], [4, 5, 6], [4, 5, 6], [0, 0, 0]])
    assert shot_replication(generated, shots) == pytest.approx(3 / 5)
    assert shot_replication(generated, shots, attributes=[0, 1]) == pytest.approx(4 / 5)


def test_attribute_names_and_bad_input():
    names = toyfaces.ATTRIBUTE_NAMES
    shots = np.zeros((1, len(names)), dtype=np.int64)
    generated = np.zeros((2, len(names)), dtype=np.int64)
    generated[1, names.index("mouth")] = 2
    assert shot_replication(generated, shots, attributes=["mouth"]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown attribute"):
        shot_replication(generated, shots, attributes=["wings"])
    with pytest.raises(ValueError, match="out of range"):
        attribute_coverage(generated, shots, attributes=[len(names)])
    with pytest.raises(ValueError):
        shot_replication(np.zeros((0, 3)), shots)


def test_nearest_shot_agreement_is_one_for_copies_and_lower_for_diverse_samples():
    from adaptscope.embedded.groundtruth import nearest_shot_agreement

    shots = np.array([[0, 0, 0, 0], [1, 1, 1, 1]])
    copies = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
    assert nearest_shot_agreement(copies, shots) == 1.0
    mixed = np.array([[0, 1, 2, 2], [1, 1, 0, 0]])  # best shares: 1/4 and 2/4
    assert nearest_shot_agreement(mixed, shots) == pytest.approx(0.375)
    assert nearest_shot_agreement(mixed, shots, attributes=[0]) == 1.0
