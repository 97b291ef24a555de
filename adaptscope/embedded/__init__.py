"""The embedded world: ToyFaces domains with known attributes, the shipped toy source StyleGAN2
and toy metric network (and their trainers), the toy backbones' metric interfaces, and the
checks that the source model and the metrics measure what they claim. It lets the whole
analysis run offline on a laptop; its numbers are labelled `toy` and never mixed with
Inception / VGG numbers.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

TOYFACES_PREFIX = "toyfaces:"  # a target named "toyfaces:<domain>" is rendered, not read
TOY_SOURCE = "toy"  # source.checkpoint naming the shipped toy source StyleGAN2
# source.checkpoint naming the shipped toy diffusion model (the diffusion family's source)
TOY_DIFFUSION_SOURCE = "toy-diffusion"


def asset(name: str) -> Path:
    """Path of a file shipped with the embedded world (`toy_source.pt`, `toy_diffusion.pt`,
    `toynet.pt`, `embedded-default.toml`) inside the installed package."""
    return Path(str(resources.files("adaptscope.embedded") / "assets" / name))
