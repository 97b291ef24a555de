"""The empirical Fisher shared by EWC, AdAM and RICK, on losses whose gradients are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptscope.methods.fisher import empirical_fisher


def test_mean_of_squared_per_sample_gradients_per_group():
    # loss_s = w . x_s has gradient x_s, so F = mean_s x_s^2; v's loss v . y_s gives mean y_s^2
    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    v = torch.ones(2, dtype=torch.float64, requires_grad=True)
    unused = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    samples = (({"a": w @ torch.from_numpy(x), "b": v @ torch.from_numpy(y) + w.sum()}, 1)
               for x, y in zip(xs, ys, strict=True))
    fisher = empirical_fisher(samples, {"a": {"w": w, "unused": unused}, "b": {"v": v}})
    np.testing.assert_allclose(fisher["a"]["w"].numpy(), (xs**2).mean(0), rtol=1e-12)
    np.testing.assert_array_equal(fisher["a"]["unused"].numpy(), np.zeros(4))
    np.testing.assert_allclose(fisher["b"]["v"].numpy(), (ys**2).mean(0), rtol=1e-12)
    assert set(fisher["b"]) == {"v"}  # b's loss also reaches w, but w is not b's parameter


def test_batch_weights_square_the_batch_mean_gradient():
    # a batch of b samples with loss mean_s(w . x_s) has gradient mean_s x_s, weighted by b
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(3, 2)), rng.normal(size=(1, 2))]
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    samples = (({"g": (torch.from_numpy(x) @ w).mean()}, len(x)) for x in batches)
    fisher = empirical_fisher(samples, {"g": {"w": w}})["g"]["w"]
    expected = sum(len(x) * x.mean(0) ** 2 for x in batches) / 4
    np.testing.assert_allclose(fisher.numpy(), expected, rtol=1e-12)


def test_gradients_are_taken_under_no_grad():
    w = torch.ones(2, requires_grad=True)

    def samples():
        yield {"g": (w * torch.tensor([2.0, 3.0])).sum()}, 1

    with torch.no_grad():
        fisher = empirical_fisher(samples(), {"g": {"w": w}})
    assert fisher["g"]["w"].tolist() == [4.0, 9.0]


def test_no_samples_is_an_error():
    with pytest.raises(ValueError, match="at least one sample"):
        empirical_fisher(iter(()), {"g": {"w": torch.zeros(1, requires_grad=True)}})
