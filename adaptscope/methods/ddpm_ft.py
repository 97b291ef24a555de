"""DDPM fine-tuning: every UNet weight trained on the DDPM objective from the shots alone.

The diffusion family's baseline, as TGAN is the GAN family's: the few-shot diffusion papers
(DDPM-PA / DomainStudio, Zhu et al.; DreamBooth's fine-tuning without prior preservation) all
compare against it. The objective is Ho et al. 2020's simple loss, || eps - eps_theta(x_t, t) ||^2
at one uniform timestep per image (`adaptscope.models.diffusion.denoising_loss`), which is what
guided-diffusion's `training_losses` and diffusers' training examples minimise for an
epsilon-predicting model.
"""

from __future__ import annotations

from adaptscope.methods.diffusion_base import DiffusionMethod


class DDPMFineTune(DiffusionMethod):
    """Full fine-tuning: `DiffusionMethod`'s defaults, named. Its subclasses (DreamBooth,
    DomainStudio) also train every UNet weight and only add loss terms."""

    name = "ddpm_ft"
    summary = "Fine-tune every UNet weight on the DDPM objective (the TGAN of diffusion)."
