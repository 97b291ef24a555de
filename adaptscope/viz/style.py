"""One look for every figure: a colour and marker per method that never changes between figures.

Colours are keyed by method name rather than by position, so a notebook that plots a subset of
methods still draws DCL in the same colour as the report does.
"""

from __future__ import annotations

import contextlib
import re
import zlib
from collections.abc import Iterable, Iterator

import matplotlib as mpl
import seaborn as sns

# The paper's methods first, in the order its figures use, then the built-in methods outside it
# (its other baselines, the methods after it); any other method follows by name.
# The diffusion family's methods come after the GAN ones.
METHOD_ORDER: tuple[str, ...] = ("tgan", "tgan_ada", "freezed", "ewc", "cdc", "dcl", "bsa",
                                 "minegan", "adam", "rick",
                                 "ddpm_ft", "lora", "dreambooth", "domainstudio")

# seaborn's colour-blind palette, pinned so figures do not change when seaborn does.
_FIXED_COLORS: dict[str, str] = {
    "tgan": "#0173b2",
    "tgan_ada": "#56b4e9",
    "freezed": "#de8f05",
    "ewc": "#029e73",
    "cdc": "#cc78bc",
    "dcl": "#d55e00",
    "bsa": "#949494",
    "minegan": "#ca9161",
    "adam": "#1b2a49",
    "rick": "#9467bd",
    # the diffusion methods: darker, so the two families read apart on one plane
    "ddpm_ft": "#000000",
    "lora": "#66a61e",
    "dreambooth": "#8c2d04",
    "domainstudio": "#3f007d",
}
# Distinct from the fixed colours and from each other.
_OTHER_COLORS: tuple[str, ...] = (
    "#fbafe4",
    "#8c564b",
    "#17becf",
    "#bcbd22",
    "#ece133",
    "#637939",
    "#843c39",
    "#7b4173",
)
_FIXED_MARKERS: dict[str, str] = {"tgan": "o", "tgan_ada": "v", "freezed": "s", "ewc": "^",
                                  "cdc": "D", "dcl": "P", "bsa": "X", "minegan": "<",
                                  "adam": "*", "rick": "h", "ddpm_ft": ">", "lora": "p",
                                  "dreambooth": "8", "domainstudio": "d"}
_OTHER_MARKERS: tuple[str, ...] = (">", "p", "8", "d", "H")
_DISPLAY_NAMES: dict[str, str] = {
    "tgan": "TGAN",
    "tgan_ada": "TGAN+ADA",
    "freezed": "FreezeD",
    "ewc": "EWC",
    "cdc": "CDC",
    "dcl": "DCL",
    "bsa": "BSA",
    "minegan": "MineGAN",
    "adam": "AdAM",
    "rick": "RICK",
    "ddpm_ft": "DDPM-FT",
    "lora": "LoRA",
    "dreambooth": "DreamBooth",
    "domainstudio": "DomainStudio",
}


def ordered_methods(methods: Iterable[str]) -> list[str]:
    """The built-in methods in their fixed order, then any others alphabetically; a sweep's
    variants (`ewc [ewc.lam=10]`) follow their method's place, in the order of their values."""
    return sorted(set(methods), key=_order_key)


def _order_key(method: str) -> tuple:
    base, _, variant = method.partition(" [")
    place = METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)
    return (place, base, bool(variant), _natural(variant))


_NUMBER = re.compile(r"([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")


def _natural(text: str) -> tuple:
    """`lam=10.0` < `lam=100.0` < `lam=1e3`: numbers compared as numbers, text as text."""
    parts = _NUMBER.split(text)
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts))


def _stable_slot(method: str, size: int) -> int:
    return zlib.crc32(method.encode()) % size


def method_palette(methods: Iterable[str]) -> dict[str, str]:
    """Colour of each method: fixed for the built-in methods, name-derived for the others; a
    sweep's variants of one method (`ewc [ewc.lam=10]`) run along a sequential colour map in
    the order of their values, so a swept setting reads as a gradient."""
    palette: dict[str, str] = {}
    taken: set[str] = set()
    ordered = ordered_methods(methods)
    for method in ordered:
        if method in _FIXED_COLORS:
            palette[method] = _FIXED_COLORS[method]
            continue
        if " [" in method:
            continue  # below, with the other variants of its method
        slot = _stable_slot(method, len(_OTHER_COLORS))
        for step in range(len(_OTHER_COLORS)):  # probe only when two new methods collide
            colour = _OTHER_COLORS[(slot + step) % len(_OTHER_COLORS)]
            if colour not in taken:
                break
        palette[method] = colour
        taken.add(colour)
    variants: dict[str, list[str]] = {}
    for method in ordered:
        if " [" in method:
            variants.setdefault(method.partition(" [")[0], []).append(method)
    ramp = mpl.colormaps[_VARIANT_MAP]
    for group in variants.values():
        for i, method in enumerate(group):
            share = i / (len(group) - 1) if len(group) > 1 else 0.5
            palette[method] = mpl.colors.to_hex(ramp(_VARIANT_RANGE[0] + share * (
                _VARIANT_RANGE[1] - _VARIANT_RANGE[0])))
    return palette


# A sweep's variants: viridis without its palest yellows, which vanish on white.
_VARIANT_MAP = "viridis"
_VARIANT_RANGE = (0.0, 0.85)


def method_marker(method: str) -> str:
    """Marker of a method, so lines stay distinguishable in greyscale print; a sweep's variant
    keeps its method's."""
    method = method.partition(" [")[0]
    if method in _FIXED_MARKERS:
        return _FIXED_MARKERS[method]
    return _OTHER_MARKERS[_stable_slot(method, len(_OTHER_MARKERS))]


def method_label(method: str) -> str:
    """The name a method goes by in the literature (TGAN, FreezeD, ...), a sweep's variant
    after it, its own table's settings without the method's prefix (`EWC [lam=10]` for
    `ewc [ewc.lam=10]`; a shared setting keeps its section: `EWC [train.lr=0.001]`)."""
    base, bracket, variant = method.partition(" [")
    if not bracket:
        return _DISPLAY_NAMES.get(base, base)
    variant = re.sub(rf"(^|, ){re.escape(base)}\.", r"\1", variant)  # its own table's keys
    return f"{_DISPLAY_NAMES.get(base, base)} [{variant}"


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Theme applied while a figure is built; leaves the caller's rcParams untouched.

    Every text drawn is literal: names of targets, methods and backbones come from users, and
    matplotlib would read a pair of `$` in them as mathtext (and fail on `$\\frac$`).
    """
    rc = {
        "text.parse_math": False,
        "axes.formatter.use_mathtext": False,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "xtick.labelsize": 9,
        "ytick.labelsize": 9,
        "legend.fontsize": 10,
        "figure.titlesize": 12,
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "font.family": "DejaVu Sans",
    }
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook"), mpl.rc_context(rc):
        yield
