"""ADA's non-leaking differentiable augmentation with an adaptive probability p.

Karras et al. 2020 ("Training Generative Adversarial Networks with Limited Data"): every image
D sees, real or fake, passes through one random pipeline whose transforms are each applied with
probability p. Since each transform is skipped with probability 1 - p, the clean distribution
stays recoverable and G does not learn the augmentations (they do not "leak") while p stays
below about 0.8. p follows the overfitting heuristic r_t = E[sign(D(real))]: it rises while
r_t is above a target and falls otherwise.

The transforms, their order, probabilities and strengths follow rosinality's port
(`rosinality non_leaking.py`, lines cited below); the adjustment of p follows its
`AdaptiveAugment` and CDC's copy of it in `CDC train.py`.

Simplified with respect to the port:

* Geometry is one bilinear `F.grid_sample` at the input resolution with
  `padding_mode="reflection"`. The port pads with `F.pad(mode="reflect")`, upsamples 2x with
  the sym6 wavelet filter, samples, then filters and downsamples 2x (rosinality
  non_leaking.py:324-336, 388-438). So there is no anti-aliasing for rotations or shrinking,
  and the border mirror repeats the edge pixel (symmetric) where `F.pad` does not.
* The port's custom grid-sample autograd functions (rosinality non_leaking.py:339-377) exist
  only for double backward; `F.grid_sample` in torch 2.x already supports it, so an R1 penalty
  taken through augmented reals still works.
* p == 0 returns the input itself; the port still resamples (and so filters) at p == 0.
* Random numbers come from the global torch RNG on the images' device. The port draws on the
  CPU (rosinality non_leaking.py:162-182, 252-283).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
TRANSFORMS = GEOMETRIC + COLOR

# Quarter turns that "rotate90" chooses between, as the port does it: `category_sample(size,
# (0, 3))` picks 0 or 3, never 1 or 2 (rosinality non_leaking.py:204-205; CDC's copy is the
# same). The paper and NVIDIA's code pick uniformly from (0, 1, 2, 3).
ROT90_QUARTER_TURNS = (0, 3)

_LOG2 = math.log(2)
# Exact cos and sin of k quarter turns, so 90-degree rotations resample pixel centres exactly.
_COS_QUARTER = (1.0, 0.0, -1.0, 0.0)
_SIN_QUARTER = (0.0, 1.0, 0.0, -1.0)


def _check_only(only: Iterable[str] | None) -> frozenset[str]:
    """Resolve the transform selection; unknown names raise, since a typo would augment nothing."""
    if only is None:
        return frozenset(TRANSFORMS)
    chosen = frozenset(only)
    unknown = sorted(chosen - set(TRANSFORMS))
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; known: {', '.join(TRANSFORMS)}")
    return chosen


def _check_p(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"augmentation probability p must lie in [0, 1], got {p}")


def _mat3(a, b, c, d, e, f) -> torch.Tensor:
    """Batch of 2D homogeneous matrices [[a, b, c], [d, e, f], [0, 0, 1]] from (N,) tensors."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack((a, b, c, d, e, f, zero, zero, one), -1).view(-1, 3, 3)


def _rotate2d(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(cos)
    return _mat3(cos, -sin, zero, sin, cos, zero)


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(sx)
    return _mat3(sx, zero, zero, zero, sy, zero)


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    zero, one = torch.zeros_like(tx), torch.ones_like(tx)
    return _mat3(one, zero, tx, zero, one, ty)


def _color4(block: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """(N, 4, 4) colour matrices from (N, 3, 3) linear parts and optional (N, 3) shifts."""
    out = torch.eye(4, device=block.device).repeat(block.shape[0], 1, 1)
    out[:, :3, :3] = block
    if shift is not None:
        out[:, :3, 3] = shift
    return out


def _select(
    prob: float, name: str, chosen: frozenset[str], transform: torch.Tensor,
    prev: torch.Tensor,
) -> torch.Tensor:
    """Apply `transform` after `prev` for a random subset of the batch (each with `prob`).

    The port's `random_mat_apply` (rosinality non_leaking.py:185-190). The coin is drawn even
    for a transform left out of `chosen`, so the RNG stream does not depend on the selection.
    """
    n = transform.shape[0]
    coin = torch.rand(n, device=transform.device) < prob
    if name not in chosen:
        return prev
    eye = torch.eye(transform.shape[1], device=transform.device)
    return torch.where(coin.view(n, 1, 1), transform, eye) @ prev


def sample_matrices(
    p: float, batch: int, height: int, width: int, *, only: Iterable[str] | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one geometric and one colour matrix per image of a batch (float32).

    The geometric matrix (N, 3, 3) maps input to output pixel coordinates, x to the right and
    y down, with the origin at the image centre: the port's `sample_affine` before it inverts
    it (rosinality non_leaking.py:193-249, 330). Each step left-multiplies, so later
    transforms act after earlier ones. Probabilities and strengths, for an H x W image:

    * xflip: mirror x with probability 1/2 (non_leaking.py:198-200);
    * rotate90: `ROT90_QUARTER_TURNS` quarter turns, chosen uniformly (:204-206);
    * xint: integer translation round(U(-0.125, 0.125) * W) px in x, likewise with H in y
      (:210-214);
    * scale: isotropic, lognormal with std 0.2 ln 2 (:218-220);
    * rotate: pre-rotation by U(-pi, pi) (:226-228), then after the anisotropic scale a
      post-rotation drawn the same way (:238-240), each with p_rot = 1 - sqrt(1 - p) (:223) so
      that at least one of them happens with probability p;
    * aniso: scale x by s and y by 1/s, s lognormal with std 0.2 ln 2 (:232-234);
    * xfrac: fractional translation N(0, 0.125) * W px in x, N(0, 0.125) * H in y (:244-246).

    All but the rotations happen with probability p, per image and independently.

    The colour matrix (N, 4, 4) acts on (r, g, b, 1) in the images' own range ([-1, 1], so the
    luma axis passes through mid grey), as the port's `sample_color` (:252-283), with
    v = (1, 1, 1) / sqrt(3):

    * brightness: add b to all channels, b ~ N(0, 0.2) (:259-261);
    * contrast: scale by c, lognormal with std 0.5 ln 2 (:264-266);
    * lumaflip: I - 2 v v^T with probability 1/2 (:269-271, matrix :141-148);
    * hue: rotation about v by U(-pi, pi) (:274-276, matrix :109-127);
    * saturation: v v^T + s (I - v v^T), s lognormal with std ln 2 (:279-281, matrix :151-159).

    Each happens with probability p. `only` keeps the named transforms (see `TRANSFORMS`); the
    others stay identity, yet their random numbers are still drawn.
    """
    _check_p(p)
    chosen = _check_only(only)
    n = batch

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, device=device)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device)

    geom = torch.eye(3, device=device).repeat(n, 1, 1)
    p_rot = 1.0 - math.sqrt(1.0 - p)

    flip = torch.randint(0, 2, (n,), device=device).float()
    geom = _select(p, "xflip", chosen, _scale2d(1.0 - 2.0 * flip, torch.ones_like(flip)), geom)

    turns = torch.tensor(ROT90_QUARTER_TURNS, device=device)
    k = turns[torch.randint(0, len(ROT90_QUARTER_TURNS), (n,), device=device)]
    # The port rotates by -k * pi / 2 (rosinality non_leaking.py:205): cos(k pi/2), -sin(k pi/2).
    cos_q = torch.tensor(_COS_QUARTER, device=device)[k]
    sin_q = torch.tensor(_SIN_QUARTER, device=device)[k]
    geom = _select(p, "rotate90", chosen, _rotate2d(cos_q, -sin_q), geom)

    shift = rand(2, n) * 0.25 - 0.125  # row 0 scales with the height, row 1 with the width
    geom = _select(p, "xint", chosen, _translate2d(torch.round(shift[1] * width),
                                                   torch.round(shift[0] * height)), geom)

    s = torch.exp(randn(n) * (0.2 * _LOG2))
    geom = _select(p, "scale", chosen, _scale2d(s, s), geom)

    theta = (rand(n) * 2.0 - 1.0) * math.pi
    geom = _select(p_rot, "rotate", chosen, _rotate2d(torch.cos(-theta), torch.sin(-theta)), geom)

    s = torch.exp(randn(n) * (0.2 * _LOG2))
    geom = _select(p, "aniso", chosen, _scale2d(s, 1.0 / s), geom)

    theta = (rand(n) * 2.0 - 1.0) * math.pi
    geom = _select(p_rot, "rotate", chosen, _rotate2d(torch.cos(-theta), torch.sin(-theta)), geom)

    shift = randn(2, n) * 0.125
    geom = _select(p, "xfrac", chosen, _translate2d(shift[1] * width, shift[0] * height), geom)

    color = torch.eye(4, device=device).repeat(n, 1, 1)
    eye3 = torch.eye(3, device=device).expand(n, 3, 3)
    v = torch.full((3,), 1.0 / math.sqrt(3.0), device=device)
    vvt = torch.outer(v, v).expand(n, 3, 3)

    b = randn(n) * 0.2
    color = _select(p, "brightness", chosen, _color4(eye3, b[:, None].expand(n, 3)), color)

    c = torch.exp(randn(n) * (0.5 * _LOG2))
    color = _select(p, "contrast", chosen, _color4(eye3 * c.view(n, 1, 1)), color)

    i = torch.randint(0, 2, (n,), device=device).float().view(n, 1, 1)
    color = _select(p, "lumaflip", chosen, _color4(eye3 - 2.0 * vvt * i), color)

    theta = ((rand(n) * 2.0 - 1.0) * math.pi).view(n, 1, 1)
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], device=device)
    cross = cross / math.sqrt(3.0)  # the cross-product matrix of v
    hue = torch.cos(theta) * eye3 + torch.sin(theta) * cross + (1.0 - torch.cos(theta)) * vvt
    color = _select(p, "hue", chosen, _color4(hue), color)

    s = torch.exp(randn(n) * _LOG2).view(n, 1, 1)
    color = _select(p, "saturation", chosen, _color4(vvt + (eye3 - vvt) * s), color)

    return geom, color


def apply_matrices(
    images: torch.Tensor, geom: torch.Tensor | None, color: torch.Tensor | None,
) -> torch.Tensor:
    """Resample `images` (N, C, H, W) by `geom`, then mix channels by `color` (C == 3).

    Either matrix may be None to skip that stage. Differentiable w.r.t. the images.
    """
    n, channels, height, width = images.shape
    out = images
    if geom is not None:
        a = geom.to(device=images.device, dtype=torch.float32)
        m00, m01, m10, m11 = a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1]
        det = m00 * m11 - m01 * m10
        inv = torch.stack((m11, -m01, -m10, m00), -1).view(n, 2, 2) / det.view(n, 1, 1)
        inv_t = -(inv @ a[:, :2, 2:])
        # Pixel centre i sits at normalised (2 i + 1) / W - 1 (align_corners=False), i.e. at
        # u * W / 2 in centred pixels: theta = S^-1 A^-1 S with S = diag(W / 2, H / 2).
        half = torch.tensor([width / 2.0, height / 2.0], device=images.device)
        theta = torch.cat((inv * half.view(1, 1, 2) / half.view(1, 2, 1),
                           inv_t / half.view(1, 2, 1)), 2)
        grid = F.affine_grid(theta.to(images.dtype), [n, channels, height, width],
                             align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="reflection",
                            align_corners=False)
    if color is not None:
        if channels != 3:
            raise ValueError(f"colour augmentations need 3 channels, got {channels}")
        c = color.to(device=images.device, dtype=images.dtype)
        flat = out.reshape(n, 3, height * width)
        out = torch.baddbmm(c[:, :3, 3:], c[:, :3, :3], flat).view(n, 3, height, width)
    return out


def augment(
    images: torch.Tensor, p: float, *, only: Iterable[str] | None = None,
) -> torch.Tensor:
    """Augment a (N, 3, H, W) batch with ADA's pipeline at probability p (see `sample_matrices`).

    Call it once on reals and once on fakes, as both references do (rosinality train.py:179-180,
    CDC train.py:218-220): the same distribution, independent draws. p == 0 returns `images`
    itself. `only` restricts the pipeline to the named transforms; a stage with none selected
    is skipped altogether.
    """
    _check_p(p)
    chosen = _check_only(only)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    if p == 0.0:
        return images
    n, _, height, width = images.shape
    geom, color = sample_matrices(p, n, height, width, only=chosen, device=images.device)
    return apply_matrices(images,
                          geom if chosen & set(GEOMETRIC) else None,
                          color if chosen & set(COLOR) else None)


class AdaptiveAugment:
    """ADA augmentation whose probability p follows the overfitting heuristic r_t.

    After every `update_every` (or more) real images, r_t = mean sign(D(real)) over them, and
    p moves by +n / length if r_t > target, else by -n / length (n: the images counted), then
    is clamped to [0, 1] (rosinality non_leaking.py:25-46). A tie r_t == target lowers p, as
    in both references (non_leaking.py:37-41, CDC train.py:250-254). The counting follows CDC:
    images, not calls, with the update once more than `update_every - 1` were seen (CDC
    train.py:245, `> 255`); rosinality's class counts calls instead (non_leaking.py:29-31).

    CDC's training loop steps by target / length per image instead (CDC train.py:182, 256),
    i.e. 0.6x as fast at target 0.6; this class uses the port's n / length.
    """

    def __init__(self, p: float = 0.0, target: float = 0.6, length: int = 500_000,
                 update_every: int = 256, adaptive: bool = True) -> None:
        _check_p(p)
        if length < 1 or update_every < 1:
            raise ValueError(f"length and update_every must be >= 1, got {length}, {update_every}")
        self.p = float(p)
        self.target = float(target)
        self.length = int(length)
        self.update_every = int(update_every)
        self.adaptive = bool(adaptive)
        self.r_t = math.nan
        # Sum of signs since the last update: a tensor on the logits' device between updates,
        # so that accumulating costs no device sync.
        self._sign_sum: torch.Tensor | float = 0.0
        self._n_seen = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a (N, 3, H, W) batch in [-1, 1] at the current p; p == 0 returns `images`."""
        return augment(images, self.p)

    @torch.no_grad()
    def update(self, real_logits: torch.Tensor) -> None:
        """Count D's logits on (augmented) reals and move p once `update_every` images are in.

        The first dimension indexes images; several logits per image (a patch discriminator)
        count once, by the sign of their mean, so r_t stays within [-1, 1]. For one logit per
        image this is the references' sign(real_pred).sum() over real_pred.shape[0] images
        (rosinality non_leaking.py:25-28, CDC train.py:240-242). No-op when not adaptive.
        """
        if not self.adaptive:
            return
        logits = real_logits.detach().float()
        per_image = logits.reshape(1) if logits.ndim == 0 else logits.reshape(
            logits.shape[0], -1).mean(1)
        if per_image.numel() == 0:
            return
        self._sign_sum = torch.sign(per_image).sum() + self._sign_sum
        self._n_seen += per_image.shape[0]
        if self._n_seen < self.update_every:
            return
        n = self._n_seen
        self.r_t = float(self._sign_sum) / n
        step = n / self.length if self.r_t > self.target else -n / self.length
        self.p = min(1.0, max(0.0, self.p + step))
        self._sign_sum = 0.0
        self._n_seen = 0

    def state_dict(self) -> dict:
        """p, r_t and the running counts: everything a bit-for-bit resume needs."""
        return {"p": self.p, "r_t": self.r_t, "sign_sum": float(self._sign_sum),
                "n_seen": self._n_seen}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` saved (the settings come from the constructor)."""
        self.p = float(state["p"])
        self.r_t = float(state["r_t"])
        self._sign_sum = float(state["sign_sum"])
        self._n_seen = int(state["n_seen"])
