"""ToyFaces: the embedded world's procedural face domains with ground-truth attributes.

A face is an identity drawn from 11 independent discrete attributes (uniform levels) plus small
continuous jitter. Image i of any domain is a pure function of (domain, i, size): every random
number is a counter-based hash of (identity seed, i, stream), never a stateful generator, so
``sunglasses[i]`` is exactly ``source[i]`` wearing sunglasses, ``babies[i]`` is the same identity
with baby proportions and ``sketches[i]`` its line drawing, and an image never depends on which
batch it was rendered in. The source GAN trains on ``SOURCE_RANGE``, disjoint from every target's
``FULL_SET``, so it never sees a target identity.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptscope.embedded import _raster as R

DOMAINS: tuple[str, ...] = ("source", "sunglasses", "babies", "sketches")
TARGET_DOMAINS: tuple[str, ...] = DOMAINS[1:]


@dataclass(frozen=True)
class Attribute:
    """One discrete attribute of a ToyFaces identity; `values` names its levels in order."""

    name: str
    values: tuple[str, ...]

    @property
    def levels(self) -> int:
        return len(self.values)


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("face_shape", ("round", "oval", "long")),
    Attribute("face_size", ("small", "medium", "large")),
    Attribute("skin_tone", ("pale", "light", "tan", "dark")),
    Attribute("hair_style", ("none", "short", "long", "fringe")),
    Attribute("hair_colour", ("black", "brown", "blonde", "red")),
    Attribute("eye_size", ("small", "large")),
    Attribute("eye_spacing", ("narrow", "wide")),
    Attribute("mouth", ("smile", "flat", "open")),
    Attribute("head_offset", ("left", "centre", "right")),
    Attribute("background", ("blue", "green", "purple", "grey")),
    Attribute("accessory", ("none", "earrings", "hat")),
)
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(a.name for a in ATTRIBUTES)
_COL = {name: k for k, name in enumerate(ATTRIBUTE_NAMES)}

# Attributes a domain's images cannot show: sunglass lenses have one size whatever the eyes
# behind them, and sketches carry no colour. Classifier training and evaluation skip these.
UNOBSERVABLE: dict[str, frozenset[str]] = {
    "source": frozenset(),
    "sunglasses": frozenset({"eye_size"}),
    "babies": frozenset(),
    "sketches": frozenset({"skin_tone", "hair_colour", "background"}),
}

# Fixed index ranges. Target full sets mirror the paper's sizes (about 2.5k for Babies and
# Sunglasses, 300 for Sketches); the source training range is disjoint from all of them.
FULL_SET: dict[str, range] = {
    "sunglasses": range(0, 2500),
    "babies": range(100_000, 102_500),
    "sketches": range(200_000, 200_300),
}
SOURCE_RANGE = range(1_000_000, 2_000_000)

IDENTITY_SEED = 0x70F_ACE5
SUPERSAMPLE = 4
_CHUNK = 64

# --- counter-based randomness ------------------------------------------------------------------

_M64 = (1 << 64) - 1


def _mix_int(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _mix(z: np.ndarray) -> np.ndarray:
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniform(indices: np.ndarray, stream: int) -> np.ndarray:
    """Uniform [0, 1) numbers, one per index, independent across streams."""
    key = np.uint64(_mix_int(_mix_int(IDENTITY_SEED) ^ stream))
    z = _mix(indices.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + key)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _jitter(indices: np.ndarray, stream: int, scale: float) -> np.ndarray:
    return ((_uniform(indices, 100 + stream) * 2.0 - 1.0) * scale).astype(np.float32)


# --- public: identities ------------------------------------------------------------------------


def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"unknown ToyFaces domain {domain!r}; choose one of {', '.join(DOMAINS)}")


def _as_indices(indices) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and idx.min() < 0:
        raise ValueError("ToyFaces indices must be non-negative")
    return idx


def attributes(domain: str, indices) -> np.ndarray:
    """Ground-truth attribute levels (n, n_attributes) int64; identical for every domain."""
    _check_domain(domain)
    idx = _as_indices(indices)
    out = np.empty((idx.size, len(ATTRIBUTES)), dtype=np.int64)
    for k, attr in enumerate(ATTRIBUTES):
        out[:, k] = np.minimum((_uniform(idx, k) * attr.levels).astype(np.int64), attr.levels - 1)
    return out


def observable(domain: str) -> np.ndarray:
    """Which attributes (in ATTRIBUTES order) a domain's images show, (n_attributes,) bool."""
    _check_domain(domain)
    return np.array([a.name not in UNOBSERVABLE[domain] for a in ATTRIBUTES], dtype=bool)


def full_set(domain: str) -> range:
    """A target's full index range (the real set for FID); the training range for the source."""
    _check_domain(domain)
    return SOURCE_RANGE if domain == "source" else FULL_SET[domain]


def few_shot_indices(domain: str, shots: int = 10, seed: int = 0) -> np.ndarray:
    """`shots` distinct indices of the domain's full set, chosen by `seed` (sorted)."""
    rng_range = full_set(domain)
    if not 0 < shots <= len(rng_range):
        raise ValueError(f"shots must be in 1..{len(rng_range)} for {domain!r}, got {shots}")
    rng = np.random.default_rng([seed, DOMAINS.index(domain)])
    picked = rng.choice(len(rng_range), size=shots, replace=False)
    return np.sort(np.asarray(rng_range.start + picked, dtype=np.int64))


# --- geometry ----------------------------------------------------------------------------------

_SKIN = np.array([(246, 222, 200), (228, 186, 152), (190, 138, 100), (125, 84, 58)], np.float32)
_HAIR = np.array([(40, 32, 30), (105, 68, 42), (226, 196, 120), (176, 82, 40)], np.float32)
_BACKGROUND = np.array(
    [(118, 160, 214), (124, 186, 132), (168, 136, 198), (156, 156, 156)], np.float32
)
_BABY_TINT = np.array((255, 210, 205), np.float32)
_BLUSH = np.array((255, 140, 150), np.float32)

(
    BG,
    SHOULDERS,
    HAIR_BACK,
    NECK,
    FACE,
    BLUSH,
    NOSE,
    EYE,
    PUPIL,
    BROW,
    MOUTH,
    FRAME,
    LENS,
    HAIR,
    EARRING,
    HAT,
    BRIM,
) = range(17)
_N_LABELS = 17


@dataclass
class _Face:
    """Per-image geometry in [0, 1] image units (x right, y down) and per-image colours."""

    attrs: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    a: np.ndarray  # face half width
    b: np.ndarray  # face half height
    eye_y: np.ndarray
    eye_dx: np.ndarray  # horizontal distance of each eye from the face centre
    eye_rx: np.ndarray
    eye_ry: np.ndarray
    nose_y: np.ndarray
    mouth_y: np.ndarray
    mouth_w: np.ndarray
    palette: np.ndarray  # (n, _N_LABELS, 3)

    def level(self, name: str) -> np.ndarray:
        return self.attrs[:, _COL[name]]


def _colour(indices: np.ndarray, base: np.ndarray, stream: int, scale: float) -> np.ndarray:
    """Base colours (n, 3) with a shared brightness shift plus a small per-channel shift."""
    shift = _jitter(indices, stream, scale)[:, None]
    per = np.stack([_jitter(indices, stream + 1 + c, scale * 0.4) for c in range(3)], axis=1)
    return np.clip(base + shift + per, 0, 255).astype(np.float32)


def _geometry(domain: str, idx: np.ndarray) -> _Face:
    attrs = attributes("source", idx)
    lv = {name: attrs[:, k] for name, k in _COL.items()}
    baby = domain == "babies"

    aspect = np.array([1.0, 1.16, 1.32], np.float32)[lv["face_shape"]] + _jitter(idx, 0, 0.03)
    a = np.array([0.2, 0.225, 0.25], np.float32)[lv["face_size"]] + _jitter(idx, 1, 0.006)
    offset = np.array([-0.075, 0.0, 0.075], np.float32)[lv["head_offset"]]
    cx = 0.5 + offset + _jitter(idx, 2, 0.012)
    cy = 0.56 + _jitter(idx, 3, 0.012)
    eye_r = np.array([0.14, 0.21], np.float32)[lv["eye_size"]] * (1 + _jitter(idx, 4, 0.05))
    eye_dx = np.array([0.36, 0.5], np.float32)[lv["eye_spacing"]] + _jitter(idx, 5, 0.012)
    mouth_w = 0.32 * (1 + _jitter(idx, 6, 0.08))
    if baby:
        a = a * 1.1
        aspect = 1.0 + (aspect - 1.0) * 0.3
        eye_r, mouth_w = eye_r * 1.35, mouth_w * 0.6
    b = a * aspect

    skin = _colour(idx, _SKIN[lv["skin_tone"]], 20, 7.0)
    if baby:
        skin = 0.78 * skin + 0.22 * _BABY_TINT
    hair = _colour(idx, _HAIR[lv["hair_colour"]], 24, 8.0)
    pal = np.zeros((idx.size, _N_LABELS, 3), np.float32)
    pal[:, BG] = _colour(idx, _BACKGROUND[lv["background"]], 28, 8.0)
    pal[:, SHOULDERS] = np.stack(
        [40 + 180 * _uniform(idx, 200 + c).astype(np.float32) for c in range(3)], axis=1
    )
    pal[:, HAIR_BACK] = pal[:, HAIR] = hair
    pal[:, NECK] = skin * 0.9
    pal[:, FACE] = skin
    pal[:, BLUSH] = 0.6 * skin + 0.4 * _BLUSH
    pal[:, NOSE] = skin * 0.86
    pal[:, EYE] = (242, 242, 238)
    pal[:, PUPIL] = _colour(idx, np.array([(45, 35, 30)], np.float32), 32, 10.0)
    pal[:, BROW] = hair * 0.7
    open_mouth = (lv["mouth"] == 2)[:, None]
    pal[:, MOUTH] = np.where(open_mouth, (75, 18, 28), (135, 38, 50))
    pal[:, EARRING] = (238, 196, 58)
    pal[:, HAT] = _colour(idx, np.array([(178, 46, 56)], np.float32), 36, 10.0)
    pal[:, BRIM] = pal[:, HAT] * 0.72
    pal[:, FRAME] = (12, 12, 12)
    pal[:, LENS] = _colour(idx, np.array([(30, 32, 38)], np.float32), 40, 6.0)

    return _Face(
        attrs=attrs,
        cx=cx,
        cy=cy,
        a=a,
        b=b,
        eye_y=cy + (0.03 if baby else -0.08) * b,
        eye_dx=eye_dx * a,
        eye_rx=eye_r * a * (1.0 if baby else 1.25),
        eye_ry=eye_r * a,
        nose_y=cy + (0.24 if baby else 0.17) * b,
        mouth_y=cy + (0.45 if baby else 0.5) * b,
        mouth_w=mouth_w * a,
        palette=pal,
    )


def eye_region(indices, size: int) -> np.ndarray:
    """Pixel box (x0, y0, x1, y1), end-exclusive, that holds all a pair of sunglasses touches."""
    f = _geometry("sunglasses", _as_indices(indices))
    box = np.stack([f.cx - f.a, f.eye_y - 0.27 * f.a, f.cx + f.a, f.eye_y + 0.27 * f.a], axis=1)
    lo = np.floor(box[:, :2] * size).astype(np.int64) - 1
    hi = np.ceil(box[:, 2:] * size).astype(np.int64) + 1
    return np.clip(np.concatenate([lo, hi], axis=1), 0, size)


# --- drawing -----------------------------------------------------------------------------------


def _box(cx, cy, hw, hh):
    return (cx - hw, cy - hh, cx + hw, cy + hh)


def _paint_ellipse(c: R.LabelCanvas, label: int, cx, cy, rx, ry, enabled=None) -> None:
    c.paint(label, R.ellipse(cx, cy, rx, ry), _box(cx, cy, rx, ry), enabled)


def _paint_rect(c: R.LabelCanvas, label: int, cx, cy, hw, hh, enabled=None) -> None:
    c.paint(label, R.rect(cx, cy, hw, hh), _box(cx, cy, hw, hh), enabled)


def _paint_hair(c: R.LabelCanvas, f: _Face, baby: bool) -> None:
    style = f.level("hair_style")
    cx, cy, a, b = f.cx, f.cy, f.a, f.b
    if baby:
        cap = R.intersect(R.ellipse(cx, cy - 0.04 * b, 1.04 * a, 1.04 * b), R.above(cy - 0.72 * b))
        cap_box = _box(cx, cy - 0.9 * b, 1.05 * a, 0.2 * b)
        c.paint(HAIR, cap, cap_box, style >= 2)
        wedge = R.intersect(
            R.ellipse(cx, cy - 0.04 * b, 1.04 * a, 1.04 * b),
            R.above(cy - 0.5 * b),
            R.within_x(cx, 0.35 * a),
        )
        c.paint(HAIR, wedge, _box(cx, cy - 0.8 * b, 0.36 * a, 0.31 * b), style == 3)
        _paint_ellipse(c, HAIR, cx, cy - 1.0 * b, 0.22 * a, 0.14 * b, style == 1)
        return
    head = R.ellipse(cx, cy - 0.06 * b, 1.1 * a, 1.08 * b)
    cap = R.intersect(head, R.above(cy - 0.6 * b))
    fringe = R.union(cap, R.intersect(head, R.above(cy - 0.36 * b), R.within_x(cx, 0.78 * a)))
    box = _box(cx, cy - 0.7 * b, 1.11 * a, 0.5 * b)
    c.paint(HAIR, cap, box, (style == 1) | (style == 2))
    c.paint(HAIR, fringe, box, style == 3)


def _paint_sunglasses(c: R.LabelCanvas, f: _Face) -> None:
    a, ey = f.a, f.eye_y
    for side in (-1.0, 1.0):
        lx = f.cx + side * f.eye_dx
        _paint_ellipse(c, FRAME, lx, ey, 0.34 * a, 0.27 * a)
        _paint_ellipse(c, LENS, lx, ey, 0.3 * a, 0.23 * a)
        inner, outer = f.eye_dx + 0.3 * a, 0.98 * a
        arm_cx = f.cx + side * (inner + outer) / 2
        arm_hw = (outer - inner) / 2
        _paint_rect(c, FRAME, arm_cx, ey - 0.06 * a, arm_hw, 0.035 * a)
    bridge_hw = np.maximum(f.eye_dx - 0.28 * a, 0.01)
    _paint_rect(c, FRAME, f.cx, ey - 0.08 * a, bridge_hw, 0.035 * a)


def _paint_mouth(c: R.LabelCanvas, f: _Face) -> None:
    kind, cx, my, w, a = f.level("mouth"), f.cx, f.mouth_y, f.mouth_w, f.a
    # A deep U, a thin straight line and a round O: still distinct at 32 px.
    top = my - 0.16 * a
    smile = R.intersect(
        R.minus(R.ellipse(cx, top, w, 0.32 * a), R.ellipse(cx, top, 0.7 * w, 0.18 * a)),
        R.below(top),
    )
    c.paint(MOUTH, smile, _box(cx, my, w, 0.17 * a), kind == 0)
    _paint_rect(c, MOUTH, cx, my, 0.9 * w, 0.05 * a, kind == 1)
    _paint_ellipse(c, MOUTH, cx, my, 0.55 * w, 0.17 * a, kind == 2)


def _draw(domain: str, f: _Face, canvas: R.LabelCanvas) -> None:
    baby = domain == "babies"
    cx, cy, a, b = f.cx, f.cy, f.a, f.b
    style, accessory = f.level("hair_style"), f.level("accessory")

    shoulder_y, shoulder_rx = (1.12, 1.3) if baby else (1.08, 1.6)
    _paint_ellipse(
        canvas, SHOULDERS, cx, np.full_like(cx, shoulder_y), shoulder_rx * a, np.full_like(cx, 0.28)
    )
    if not baby:
        back = R.union(
            R.ellipse(cx, cy - 0.06 * b, 1.1 * a, 1.08 * b),
            R.rect(cx, cy + 0.3 * b, 1.12 * a, 0.36 * b),
        )
        canvas.paint(
            HAIR_BACK,
            back,
            (cx - 1.13 * a, cy - 1.15 * b, cx + 1.13 * a, cy + 0.67 * b),
            style == 2,
        )
    _paint_rect(canvas, NECK, cx, cy + 0.95 * b, 0.35 * a, 0.3 * b)
    _paint_ellipse(canvas, FACE, cx, cy, a, b)
    if baby:
        for side in (-1.0, 1.0):
            _paint_ellipse(canvas, BLUSH, cx + side * 0.6 * a, cy + 0.38 * b, 0.13 * a, 0.13 * a)
    nose_rx, nose_ry = (0.05, 0.07) if baby else (0.07, 0.11)
    _paint_ellipse(canvas, NOSE, cx, f.nose_y, nose_rx * a, nose_ry * a)
    for side in (-1.0, 1.0):
        ex = cx + side * f.eye_dx
        _paint_ellipse(canvas, EYE, ex, f.eye_y, f.eye_rx, f.eye_ry)
        _paint_ellipse(canvas, PUPIL, ex, f.eye_y, 0.55 * f.eye_ry, 0.55 * f.eye_ry)
        brow_y = f.eye_y - f.eye_ry - 0.12 * a
        _paint_rect(canvas, BROW, ex, brow_y, 0.22 * a, 0.045 * a)
    _paint_mouth(canvas, f)
    if domain == "sunglasses":
        _paint_sunglasses(canvas, f)
    _paint_hair(canvas, f, baby)
    for side in (-1.0, 1.0):
        _paint_ellipse(
            canvas, EARRING, cx + side * 0.97 * a, cy + 0.28 * b, 0.1 * a, 0.1 * a, accessory == 1
        )
    brim_y = cy - 0.8 * b
    crown = R.intersect(R.ellipse(cx, brim_y, 0.95 * a, 0.5 * b), R.above(brim_y))
    canvas.paint(HAT, crown, _box(cx, brim_y - 0.25 * b, 0.95 * a, 0.26 * b), accessory == 2)
    _paint_rect(canvas, BRIM, cx, brim_y, 1.25 * a, 0.06 * a, accessory == 2)


# Sketch outlines treat the two hair layers as one region, as the colour images do.
_SKETCH_MERGE = np.arange(_N_LABELS, dtype=np.uint8)
_SKETCH_MERGE[HAIR_BACK] = HAIR


def _render_chunk(domain: str, idx: np.ndarray, size: int, supersample: int) -> np.ndarray:
    geometry_domain = "source" if domain == "sketches" else domain
    f = _geometry(geometry_domain, idx)
    canvas = R.LabelCanvas(idx.size, size, supersample)
    _draw(geometry_domain, f, canvas)
    if domain != "sketches":
        return canvas.colourise(f.palette)
    edges = R.outline(_SKETCH_MERGE[canvas.labels], max(supersample // 2, 1))
    ink = (60 + 50 * _uniform(idx, 2000)).astype(np.float32)[:, None, None]
    paper = (242 + 13 * _uniform(idx, 2001)).astype(np.float32)[:, None, None]
    grey = R.downsample(np.where(edges, ink, paper), supersample)
    return np.repeat(np.clip(grey + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=3)


def render(domain: str, indices, size: int, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Images (n, size, size, 3) uint8 of `domain` at `indices`; a pure function of its inputs."""
    _check_domain(domain)
    idx = _as_indices(indices)
    if size < 8:
        raise ValueError(f"ToyFaces size must be at least 8 pixels, got {size}")
    out = np.empty((idx.size, size, size, 3), dtype=np.uint8)
    for start in range(0, idx.size, _CHUNK):
        chunk = idx[start : start + _CHUNK]
        out[start : start + _CHUNK] = _render_chunk(domain, chunk, size, supersample)
    return out


def render_tensor(domain: str, indices, size: int):
    """Images as a float32 torch tensor (n, 3, size, size) in [-1, 1], the models' input range."""
    from adaptscope.images import from_uint8

    return from_uint8(render(domain, indices, size)).contiguous()


def write_domain(
    domain: str, count: int, size: int, out_dir: str | Path, start: int | None = None
) -> Path:
    """Write `count` PNGs of `domain` from index `start` (default: the full set's first index)
    and an ``attributes.csv`` (file name and one column per attribute) into `out_dir`."""
    from PIL import Image

    _check_domain(domain)
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    first = full_set(domain).start if start is None else int(start)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for lo in range(first, first + count, 1024):
        idx = np.arange(lo, min(lo + 1024, first + count), dtype=np.int64)
        images, attrs = render(domain, idx, size), attributes(domain, idx)
        for i, img, att in zip(idx, images, attrs, strict=True):
            name = f"{domain}_{i:07d}.png"
            Image.fromarray(img).save(out / name)
            rows.append([name, *att.tolist()])
    with open(out / "attributes.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", *ATTRIBUTE_NAMES])
        writer.writerows(rows)
    return out
