"""Adaptation methods: one module each, registered by name on the shared loop.

The method modules only define their classes; the built-in ones are registered here, in one
visible list, so what exists does not depend on which modules happen to have been imported.
Methods of one's own are registered by their plugin with `@register_method`.
"""

from adaptscope.methods.adam import AdAM
from adaptscope.methods.base import (
    METHODS,
    Method,
    MethodBase,
    MethodContext,
    Step,
    get_method,
    hp,
    param_docs,
    register_method,
)
from adaptscope.methods.bsa import BSA
from adaptscope.methods.cdc import CDC
from adaptscope.methods.dcl import DCL
from adaptscope.methods.ddpm_ft import DDPMFineTune
from adaptscope.methods.diffusion_base import DiffusionContext, DiffusionMethod
from adaptscope.methods.domainstudio import DomainStudio
from adaptscope.methods.dreambooth import DreamBooth
from adaptscope.methods.ewc import EWC
from adaptscope.methods.freezed import FreezeD
from adaptscope.methods.lora import LoRA
from adaptscope.methods.minegan import MineGAN
from adaptscope.methods.rick import RICK
from adaptscope.methods.tgan import TGAN, TGANADA

# The paper's methods, then its other baselines and the methods after it; then the diffusion
# family's: full fine-tuning, LoRA, DreamBooth's prior preservation, DomainStudio.
BUILTIN_METHODS: tuple[type[MethodBase], ...] = (TGAN, TGANADA, FreezeD, EWC, CDC, DCL,
                                                 BSA, MineGAN, AdAM, RICK,
                                                 DDPMFineTune, LoRA, DreamBooth, DomainStudio)

for _cls in BUILTIN_METHODS:
    METHODS.register(_cls.name, _cls)
del _cls

__all__ = [
    "BUILTIN_METHODS",
    "METHODS",
    "DiffusionContext",
    "DiffusionMethod",
    "Method",
    "MethodBase",
    "MethodContext",
    "Step",
    "get_method",
    "hp",
    "param_docs",
    "register_method",
]
