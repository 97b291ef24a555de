"""ADA augmentation: identity at p = 0, differentiability, shared transforms, known answers, and
the adaptive update of p with its resume."""

from __future__ import annotations

import math

import pytest
import torch

from adaptscope.train.augment import (
    AdaptiveAugment,
    apply_matrices,
    augment,
    sample_matrices,
)


def _images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=gen) * 2 - 1


def _mat(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows).unsqueeze(0)


def test_p_zero_is_identity():
    x = _images()
    assert torch.equal(AdaptiveAugment(p=0.0)(x), x)
    assert augment(x, 0.0) is x


@pytest.mark.parametrize("size", [32, 256])
def test_p_one_changes_images_and_passes_gradients(size):
    x = _images(n=2, size=size).requires_grad_()
    torch.manual_seed(1)
    out = AdaptiveAugment(p=1.0)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.allclose(out, x, atol=1e-3)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_r1_through_augmentation_has_a_second_derivative():
    """An R1 penalty taken at the un-augmented reals backpropagates into D's weights."""
    x = _images(n=2, size=16).requires_grad_()
    weight = torch.randn(1, 3, 3, 3, requires_grad=True)
    torch.manual_seed(2)
    logits = torch.nn.functional.conv2d(augment(x, 1.0), weight).pow(2).sum()
    (grad,) = torch.autograd.grad(logits, x, create_graph=True)
    grad.pow(2).sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_same_seed_same_output_for_equal_batches():
    x = _images()
    torch.manual_seed(3)
    a = augment(x, 0.7)
    torch.manual_seed(3)
    b = augment(x.clone(), 0.7)
    assert torch.equal(a, b)
    torch.manual_seed(4)
    assert not torch.equal(augment(x, 0.7), a)


def test_same_seed_flips_the_same_images_of_different_batches():
    reals, fakes = _images(n=16, seed=5), _images(n=16, seed=6)

    def flipped(x: torch.Tensor) -> list[bool]:
        torch.manual_seed(7)
        out = augment(x, 1.0, only={"xflip"})
        flags = []
        for img, res in zip(x, out, strict=True):
            is_flip = torch.allclose(res, img.flip(2), atol=1e-5)
            assert is_flip or torch.allclose(res, img, atol=1e-5)
            flags.append(is_flip)
        return flags

    flags = flipped(reals)
    assert flags == flipped(fakes)
    assert any(flags) and not all(flags)  # mirrors with probability 1/2 per image


def test_same_seed_same_brightness_shift_on_constant_images():
    grey = torch.zeros(8, 3, 8, 8)
    red = grey.clone()
    red[:, 0] = 0.5
    torch.manual_seed(8)
    shift_grey = augment(grey, 1.0, only={"brightness"}) - grey
    torch.manual_seed(8)
    shift_red = augment(red, 1.0, only={"brightness"}) - red
    torch.testing.assert_close(shift_grey, shift_red)
    per_image = shift_grey[:, :1, :1, :1]
    torch.testing.assert_close(shift_grey, per_image.expand_as(shift_grey))  # same on all px
    assert per_image.flatten().std() > 0.05  # brightness ~ N(0, 0.2), one draw per image


def test_sampling_does_not_depend_on_the_images_content():
    x = _images()
    torch.manual_seed(9)
    out = augment(x, 0.5)
    torch.manual_seed(9)
    geom, color = sample_matrices(0.5, 4, 32, 32)
    torch.testing.assert_close(out, apply_matrices(x, geom, color))


def test_selection_does_not_shift_the_random_stream():
    """Leaving transforms out draws the same random numbers, so later draws stay aligned."""
    torch.manual_seed(11)
    sample_matrices(0.5, 4, 32, 32, only={"xflip"})
    after_subset = torch.get_rng_state()
    torch.manual_seed(11)
    sample_matrices(0.5, 4, 32, 32)
    assert torch.equal(after_subset, torch.get_rng_state())


def test_known_answer_xflip_rot90_and_integer_translation():
    x = _images(n=1)
    flip = _mat([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(apply_matrices(x, flip, None), x.flip(3), atol=1e-5, rtol=0)
    # The port's rotation by -pi/2 (one quarter turn) maps (x, y) to (y, -x).
    quarter = _mat([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(apply_matrices(x, quarter, None), torch.rot90(x, 1, dims=(2, 3)),
                               atol=1e-5, rtol=0)
    # Translation by +2 px in x: output column c shows input column c - 2.
    shift = _mat([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    out = apply_matrices(x, shift, None)
    torch.testing.assert_close(out[..., 2:], x[..., :-2], atol=1e-5, rtol=0)
    # Reflection padding: columns 0, 1 mirror the border (symmetric: edge pixel repeated).
    torch.testing.assert_close(out[..., :2], x[..., :2].flip(3), atol=1e-5, rtol=0)


def test_known_answer_colour_matrix():
    x = _images(n=1)
    swap = torch.zeros(1, 4, 4)
    swap[0, 0, 2] = swap[0, 1, 1] = swap[0, 2, 0] = swap[0, 3, 3] = 1.0  # r <-> b
    swap[0, 1, 3] = 0.25  # + 0.25 on g
    expected = torch.stack((x[:, 2], x[:, 1] + 0.25, x[:, 0]), 1)
    torch.testing.assert_close(apply_matrices(x, None, swap), expected)


def test_strengths_and_probabilities_follow_the_port():
    torch.manual_seed(10)
    n = 8192
    geom, _ = sample_matrices(1.0, n, 32, 32, only={"scale"})
    log_s = geom[:, 0, 0].log()
    assert abs(log_s.std().item() - 0.2 * math.log(2)) < 0.01
    # Pre- and post-rotation each at 1 - sqrt(1 - p): at least one happens with probability p.
    geom, _ = sample_matrices(0.5, n, 32, 32, only={"rotate"})
    rotated = (geom[:, :2, :2] - torch.eye(2)).abs().amax((1, 2)) > 0
    assert abs(rotated.float().mean().item() - 0.5) < 0.03
    # Integer translation: whole pixels within +-0.125 of the size.
    geom, _ = sample_matrices(1.0, n, 32, 32, only={"xint"})
    t = geom[:, :2, 2]
    assert torch.equal(t, t.round()) and t.abs().max() <= 4
    _, color = sample_matrices(1.0, n, 32, 32, only={"contrast"})
    assert abs(color[:, 0, 0].log().std().item() - 0.5 * math.log(2)) < 0.02


def test_unknown_transform_and_bad_p_raise():
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment(_images(), 0.5, only={"xflp"})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        augment(_images(), 1.5)


def _feed(aug: AdaptiveAugment, sign: float, images: int, batch: int = 8) -> None:
    for _ in range(images // batch):
        aug.update(torch.full((batch, 1), sign))


def test_positive_logits_raise_p_by_exactly_n_over_length():
    aug = AdaptiveAugment(p=0.0, target=0.6, length=500_000, update_every=256)
    _feed(aug, 1.0, 248)
    assert aug.p == 0.0 and math.isnan(aug.r_t)  # no update before 256 images
    _feed(aug, 1.0, 8)
    assert aug.r_t == 1.0
    assert aug.p == pytest.approx(256 / 500_000, abs=1e-15)
    _feed(aug, 1.0, 256)
    assert aug.p == pytest.approx(512 / 500_000, abs=1e-15)


def test_negative_logits_lower_p_and_clamp_at_zero():
    aug = AdaptiveAugment(p=0.001, target=0.6, length=500_000, update_every=256)
    _feed(aug, -1.0, 256)
    assert aug.r_t == -1.0
    assert aug.p == pytest.approx(0.001 - 256 / 500_000, abs=1e-15)
    _feed(aug, -1.0, 256)
    assert aug.p == 0.0


def test_step_uses_the_images_counted_and_ties_lower_p():
    aug = AdaptiveAugment(p=0.5, target=0.5, length=1000, update_every=6)
    aug.update(torch.tensor([1.0, 1.0, 1.0, -1.0]))  # 4 images: below update_every
    assert aug.p == 0.5
    aug.update(torch.tensor([1.0, 1.0, 1.0, -1.0]))  # 8 images, r_t = 0.5 == target
    assert aug.r_t == 0.5
    assert aug.p == pytest.approx(0.5 - 8 / 1000)


def test_several_logits_per_image_count_once_by_their_mean():
    aug = AdaptiveAugment(p=0.5, target=0.6, length=100, update_every=2)
    # Image 0: mean +0.5 -> +1; image 1: mean -1 -> -1. r_t = 0.
    aug.update(torch.tensor([[[3.0, -2.0]], [[-1.0, -1.0]]]))
    assert aug.r_t == 0.0
    assert aug.p == pytest.approx(0.5 - 2 / 100)


def test_not_adaptive_never_changes_p():
    aug = AdaptiveAugment(p=0.3, update_every=4, adaptive=False)
    _feed(aug, 1.0, 64, batch=4)
    assert aug.p == 0.3 and math.isnan(aug.r_t)


def test_state_dict_round_trip_resumes_bit_for_bit():
    signs = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0])
    first = AdaptiveAugment(p=0.2, target=0.6, length=1000, update_every=32)
    for step in range(7):  # 56 images: one update and 24 images pending
        first.update(signs.roll(step).view(8, 1))
    second = AdaptiveAugment(p=0.9, target=0.6, length=1000, update_every=32)
    second.load_state_dict(first.state_dict())
    for step in range(7, 30):
        first.update(signs.roll(step).view(8, 1))
        second.update(signs.roll(step).view(8, 1))
        assert second.p == first.p
    assert second.state_dict() == first.state_dict()
    assert first.p != 0.2
