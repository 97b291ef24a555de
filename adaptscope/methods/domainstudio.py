"""DomainStudio / DDPM-PA (Zhu et al., "Few-shot image generation with diffusion models" and
"DomainStudio: fine-tuning diffusion models for domain-driven image generation using limited
data"), unconditional form.

Fine-tuning on 10 shots collapses a diffusion model onto them; DomainStudio keeps the relative
distances between generated images as the source model has them, as CDC does for GANs, and
adds high-frequency terms so that detail is learned from the shots. Everything below was read
in the authors' code, github.com/bbzhu-jy16/DomainStudio at cc69341, `Unconditional/` (built on
openai's improved-diffusion): `training_fewshot_losses` in
guided_diffusion/gaussian_diffusion.py:1354-1531 ("gd" below). One step, on one batch of shots:

1. t per image (uniform) and noise as in DDPM training; x_t from the shots; the adapted model
   and the frozen source ("model_base") both predict the noise of the SAME x_t at the SAME t
   (gd:1379-1380); terms["mse"] is the DDPM loss (gd:1416).
2. Their predicted clean images x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar), unclipped, for
   both models (gd:1437-1440; `self.pre_x0 = True`, gd:131; the other branch, on the raw noise
   predictions, gd:1486-1507, leaves the high-frequency matrices undefined and cannot run).
3. Pairwise similarity: `sim_size` = 3 images of the batch drawn without replacement
   (gd:1433-1435); for each model, the cosine similarity of each flattened x0 to each other
   one, a (3, 2) matrix (gd:1441-1459); a softmax over each row, no temperature (gd:10,
   1509-1510); KLDivLoss(log p_adapted, p_source) with the default 'mean' reduction, i.e. the
   mean of p_s (log p_s - log p_a) over the 6 entries (gd:11, 1515), times `pair_weight`.
4. High frequencies: the Haar wavelet's three detail bands LH, HL, HH (2x2 filters with
   entries +-1/2, stride 2, per channel; gd:177-220) SUMMED into one map per channel
   (gd:1423, 1468); the same pairwise KL on these maps of the same 3 images (gd:1462-1484,
   1512-1513, 1516), times `hf_pair_weight`; and the mean squared difference between the
   adapted model's map and the map of the x0 the true noise implies, i.e. of the shots
   themselves (gd:1418-1419, 1424, 1429), times `hf_mse_weight`.
5. loss = mse + vb + similarity + similarity2 + mse2, each per-sample term averaged over the
   batch (gd:1524; train_util.py:246 with uniform weights); every weight of the adapted
   model trains (train_util.py:82-84, AdamW over all master parameters).

Departures: the three images are drawn with the global torch RNG (the code uses numpy's,
gd:1435), so a resumed run continues bit for bit; the "vb" term (the learned-variance half
of an ADM output, gd:1382-1404) is not trained, because adaptscope's `DiffusionModel` keeps
only the noise half; and all five terms are added whatever the model, whereas the code adds
the high-frequency terms only when the model learns its variance (gd:1523-1527: an
epsilon-only model would train mse + similarity), which the authors' configuration does
(Unconditional/README.md:31, `--learn_sigma True`). Set `hf_pair_weight` and `hf_mse_weight`
to 0 for the code's epsilon-only behaviour.

Known defect of the published code: GaussianDiffusion.__init__ writes `pair_weight=pair_weight,`
(gd:132-134), a tuple bound to a local name, so `self.pair_weight`, `self.hf_pair_weight` and
`self.hf_mse_weight` (gd:1429, 1515-1516) are never set and the loss raises AttributeError as
published; the values here are those its flags and defaults give (README.md:31,
script_util.py:63-65, gd:122-124).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from adaptscope.errors import ConfigError
from adaptscope.methods.base import Step, check_setting, hp
from adaptscope.methods.ddpm_ft import DDPMFineTune
from adaptscope.methods.losses import pairwise_cosine
from adaptscope.models.diffusion import denoising_loss, predicted_x0


def haar_high_frequency(x: torch.Tensor) -> torch.Tensor:
    """LH(x) + HL(x) + HH(x): the sum of the Haar wavelet's three detail bands, per channel.

    (B, C, H, W) -> (B, C, H // 2, W // 2). With L = (1, 1) / sqrt(2), H = (-1, 1) / sqrt(2),
    the band filters are the outer products L^T H, H^T L, H^T H (rows index the image's rows),
    applied with stride 2 and no padding, as DomainStudio's `get_wave` (gd:177-220). On a 2x2
    block [[a, b], [c, d]] the sum is 2 d - (a + b + c + d) / 2."""
    s = 1 / math.sqrt(2)
    low = torch.tensor([s, s], dtype=x.dtype, device=x.device)
    high = torch.tensor([-s, s], dtype=x.dtype, device=x.device)
    bands = torch.stack([torch.outer(low, high), torch.outer(high, low),
                         torch.outer(high, high)])  # LH, HL, HH: (3, 2, 2)
    c = x.shape[1]
    weight = bands.repeat(c, 1, 1).unsqueeze(1)  # (3C, 1, 2, 2), channel-major
    out = F.conv2d(x, weight, stride=2, groups=c)
    return out.view(x.shape[0], c, 3, *out.shape[2:]).sum(2)


def pairwise_similarity_kl(source: torch.Tensor, adapted: torch.Tensor,
                           temperature: float = 1.0) -> torch.Tensor:
    """DomainStudio's pairwise similarity loss on (N, ...) tensors of the same N images.

    Row i of each side holds the cosine similarities of image i to the N - 1 others, softmaxed
    (divided by `temperature` first; 1 in the authors' code); the result is the mean over the
    N (N - 1) entries of p_source (log p_source - log p_adapted), as KLDivLoss(log p_adapted,
    p_source) with reduction 'mean' gives."""
    p = F.softmax(pairwise_cosine(source) / temperature, dim=1)
    log_q = F.log_softmax(pairwise_cosine(adapted) / temperature, dim=1)
    return (torch.xlogy(p, p) - p * log_q).mean()


class DomainStudio(DDPMFineTune):
    """Full fine-tuning plus DomainStudio's pairwise-similarity and high-frequency terms."""

    name = "domainstudio"
    summary = ("Fine-tune keeping the source's pairwise similarities of predicted images, plus "
               "high-frequency terms (DDPM-PA / DomainStudio, Zhu et al. 2022-23).")

    @dataclass
    class Params:
        pair_weight: float = hp(
            4.0,
            "[C] Weight of the pairwise-similarity KL of the predicted x0 (terms['similarity'],"
            " gaussian_diffusion.py:1515; 4.0 in Unconditional/README.md:31 and "
            "script_util.py:63).")
        hf_pair_weight: float = hp(
            4.0,
            "[C] Weight of the same KL on the x0's Haar high frequencies (terms['similarity2']"
            ", gaussian_diffusion.py:1516; 4.0 in README.md:31, script_util.py:64).")
        hf_mse_weight: float = hp(
            1.0,
            "[C] Weight of the MSE between the adapted x0's high frequencies and the shots' "
            "(terms['mse2'], gaussian_diffusion.py:1429; 1.0 in README.md:31, "
            "script_util.py:65).")
        sim_size: int = hp(
            3,
            "[C] Images of the batch compared pairwise, drawn without replacement "
            "(gaussian_diffusion.py:1433-1435, hard-coded 3; the authors' batch is 3 per GPU, "
            "README.md:38, so it is the whole batch there). At most the batch size.")
        temperature: float = hp(
            1.0,
            "[C] Softmax temperature of the similarities: the code has none (Softmax(dim=1), "
            "gaussian_diffusion.py:10, 1509-1513), i.e. 1.")
        source_train_mode: bool = hp(
            True,
            "[C] Whether the frozen source predicts in training mode (dropout on, where the "
            "model has dropout): the authors' model_base is never switched to eval, so it "
            "stays in a module's default training mode (scripts/image_train.py:22-26, "
            "train_util.py:45, 229), and their models use dropout 0.1 (README.md:31). No "
            "effect on a model without dropout.")

        def __post_init__(self) -> None:
            for key in ("pair_weight", "hf_pair_weight", "hf_mse_weight"):
                value = getattr(self, key)
                check_setting(value >= 0, f"domainstudio.{key}", value, "a weight >= 0")
            check_setting(self.sim_size >= 2, "domainstudio.sim_size", self.sim_size,
                          "an integer >= 2 (similarities need another image)")
            check_setting(self.temperature > 0, "domainstudio.temperature", self.temperature,
                          "a temperature > 0")

    def losses(self, step: Step) -> dict[str, torch.Tensor]:
        """The DDPM loss and DomainStudio's three terms, from one draw of t and noise."""
        model, source, p = self.ctx.model, self.ctx.source, self.params
        if source is None:
            raise ConfigError("domainstudio needs the frozen source model "
                              "(DiffusionContext.source is None)")
        b = len(step.real)
        if b < p.sim_size:
            raise ConfigError(f"domainstudio.sim_size = {p.sim_size} is larger than the batch "
                              f"({b}): use at most {b}")
        d = denoising_loss(model, step.real, self.denoiser())
        was_training = source.training
        source.train(p.source_train_mode)
        try:
            with torch.no_grad():
                eps_source = source(d.x_t, d.t)
        finally:
            source.train(was_training)
        x0 = predicted_x0(model, d.x_t, d.eps, d.t)
        x0_source = predicted_x0(model, d.x_t, eps_source, d.t)
        x0_true = predicted_x0(model, d.x_t, d.noise, d.t)  # the shots, as the code has it
        hf, hf_source = haar_high_frequency(x0), haar_high_frequency(x0_source)
        pick = torch.randperm(b)[: p.sim_size].to(x0.device)
        return {
            "diffusion": d.loss,
            "pair": p.pair_weight * pairwise_similarity_kl(x0_source[pick], x0[pick],
                                                           p.temperature),
            "hf_pair": p.hf_pair_weight * pairwise_similarity_kl(hf_source[pick], hf[pick],
                                                                 p.temperature),
            "hf_mse": p.hf_mse_weight * (hf - haar_high_frequency(x0_true)).pow(2).mean(),
        }
