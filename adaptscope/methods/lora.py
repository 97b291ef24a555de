"""LoRA: low-rank adaptation of the UNet's layers (Hu et al., ICLR 2022), the source frozen.

Each adapted layer's weight W (out, in, k, k) or (out, in) becomes W + (alpha / r) * B @ A,
reshaped, with A (r, in*k*k) and B (out, r) the only trained tensors; B starts at zero, so at
step 0 the adapted model is the source exactly. It is the usual way diffusion models are adapted
to a few images (diffusers' `train_dreambooth_lora.py`, `train_text_to_image_lora.py`, through
peft).

Why the weights are merged on the fly. peft computes an adapted layer unmerged, as the base
layer plus a second path (`lora_B(lora_A(x))`: for a convolution, an extra pair of
convolutions per layer), which on a CPU made a LoRA step slower than full fine-tuning. Here
each adapted layer runs as ONE convolution / linear map with the merged weight
W + scale * B A, recomputed at every forward from the current factors (a few small matrix
products), so gradients reach A and B through the merged weight and W (detached) stays the
source's. The merge is applied with `torch.func.functional_call`, so the UNet's own modules,
parameter names and checkpoints are untouched: the adapters live in one module of their own
(`LoRAAdapters`), checkpointed by the method, and `denoiser()` is a view (`LoRAView`) that
calls the UNet with the merged weights. Mathematically the view equals peft's unmerged layer
with lora_dropout 0 (what diffusers' examples use: their LoraConfig sets no dropout).
`experiments/bench_lora_step.py` times one step against full fine-tuning.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from adaptscope.errors import ConfigError
from adaptscope.methods.base import check_setting, hp
from adaptscope.methods.diffusion_base import DiffusionMethod

INITS = ("kaiming_uniform", "gaussian")
# diffusers' LoRA examples adapt the attention projections (see `LoRA.Params.target_modules`).
ATTENTION_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
# A diffusers ResnetBlock2D's two 3x3 convolutions (conv1, conv2).
RESNET_TARGETS = ["conv1", "conv2"]


class LoRAFactors(nn.Module):
    """The low-rank update of one layer: A (r, fan_in) and B (out, r), scaled by alpha / r."""

    def __init__(self, weight_shape: torch.Size, rank: int, scale: float):
        super().__init__()
        fan_in = math.prod(weight_shape[1:])
        # Zeros until `reset` draws A (a fresh run's `setup`), so the update is 0 either way.
        self.lora_A = nn.Parameter(torch.zeros(rank, fan_in))
        self.lora_B = nn.Parameter(torch.zeros(weight_shape[0], rank))
        self.scale = scale

    def reset(self, init: str) -> None:
        """peft's initialisation (its `reset_lora_parameters`): A random, B zero."""
        with torch.no_grad():
            if init == "gaussian":
                nn.init.normal_(self.lora_A, std=1 / self.lora_A.shape[0])
            else:  # kaiming_uniform: nn.Linear's default, as loralib and peft do
                nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)

    def merged(self, weight: torch.Tensor) -> torch.Tensor:
        """W + scale * (B @ A), reshaped to W's shape; W is detached (frozen)."""
        delta = (self.lora_B @ self.lora_A).view(weight.shape)
        return weight.detach() + self.scale * delta


def matching_layers(model: nn.Module, targets: list[str]) -> dict[str, list[str]]:
    """For each target key, the Conv2d / Linear layers of `model` it names: the layer whose
    qualified name equals the key or ends with '.' + key (peft's `target_modules` rule)."""
    layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return {key: [n for n in layers if n == key or n.endswith("." + key)] for key in targets}


class LoRAAdapters(nn.Module):
    """The factors of every adapted layer of a model, keyed by the layer's weight name.

    ModuleDict keys may not contain '.', so a weight `unet.a.0.conv1.weight` is stored under
    `unet/a/0/conv1/weight` (state-dict keys `factors.unet/a/0/conv1/weight.lora_A`)."""

    def __init__(self, model: nn.Module, weight_names: list[str], rank: int, alpha: float):
        super().__init__()
        params = dict(model.named_parameters())
        self.weight_names = list(weight_names)
        self.factors = nn.ModuleDict({
            name.replace(".", "/"): LoRAFactors(params[name].shape, rank, alpha / rank)
            for name in self.weight_names})

    def items(self) -> Iterator[tuple[str, LoRAFactors]]:
        for name in self.weight_names:
            yield name, self.factors[name.replace(".", "/")]

    def reset(self, init: str) -> None:
        """Draw every A (in layer order, from the global RNG) and zero every B."""
        for _, f in self.items():
            f.reset(init)

    def merged_weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {name: f.merged(model.get_parameter(name)) for name, f in self.items()}


class LoRAView(nn.Module):
    """A model as its adapters change it: calls `model` with each adapted weight replaced by
    its merged weight, leaving the model's own parameters as they are."""

    def __init__(self, model: nn.Module, adapters: LoRAAdapters):
        super().__init__()
        self.model = model
        self.adapters = adapters

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.model, self.adapters.merged_weights(self.model), args,
                               kwargs)


class LoRA(DiffusionMethod):
    """Trains only the low-rank factors of the targeted UNet layers on the DDPM objective."""

    name = "lora"
    summary = "Low-rank adapters on the UNet's layers, source weights frozen (Hu et al. 2021)."

    @dataclass
    class Params:
        rank: int = hp(
            4,
            "[C] Rank r of each update B @ A: diffusers' train_dreambooth_lora.py:527-529 and "
            "train_text_to_image_lora.py:421-423 (--rank, default 4).")
        alpha: float = hp(
            4.0,
            "[C] alpha, the update's scale being alpha / r: the diffusers examples pass "
            "lora_alpha=args.rank (train_dreambooth_lora.py:942, "
            "train_text_to_image_lora.py:534), so scale 1 at the default rank. Hu et al. "
            "(sec. 4.1) keep alpha fixed when r changes, as this setting does [S: paper text].")
        target_modules: list[str] = field(
            default_factory=lambda: ATTENTION_TARGETS + RESNET_TARGETS,
            metadata={"doc": (
                "[U] Which layers get adapters: a Conv2d or Linear layer whose qualified name "
                "equals an entry or ends with '.' + entry (peft's rule). diffusers' LoRA "
                "examples target the attention projections to_k, to_q, to_v, to_out.0 "
                "([C] train_text_to_image_lora.py:536; train_dreambooth_lora.py:945 adds "
                "add_k_proj, add_v_proj, absent from an unconditional UNet). The default adds "
                "the ResNet blocks' 3x3 convolutions conv1, conv2 because the embedded 32 px "
                "UNet has attention only in its 4x4 block, so attention-only LoRA would barely "
                "adapt it; this choice is ours, not a reference's. Other names: conv_shortcut, "
                "time_emb_proj, conv_in, conv_out, downsamplers.0.conv, upsamplers.0.conv "
                "(diffusers); an ADM UNet names its layers differently (e.g. qkv, proj_out).")})
        init: str = hp(
            "kaiming_uniform",
            "[C] How A starts (B always starts at 0): 'kaiming_uniform' (a = sqrt(5)), peft's "
            "default and loralib's (peft tuners/lora/layer.py:338 in peft 0.21.2), or "
            "'gaussian' (std 1 / r, peft layer.py:340), what diffusers' examples ask for "
            "(init_lora_weights='gaussian', train_text_to_image_lora.py:535).")

        def __post_init__(self) -> None:
            check_setting(self.rank >= 1, "lora.rank", self.rank, "an integer >= 1")
            check_setting(self.alpha > 0, "lora.alpha", self.alpha,
                          "alpha > 0 (the update's scale is alpha / rank)")
            check_setting(self.init in INITS, "lora.init", self.init,
                          "one of " + ", ".join(f'"{i}"' for i in INITS))
            check_setting(len(self.target_modules) > 0
                          and all(isinstance(t, str) and t for t in self.target_modules),
                          "lora.target_modules", self.target_modules,
                          "a non-empty list of layer names, e.g. [\"to_q\", \"conv1\"]")

    def build(self) -> None:
        """Adapters on the targeted layers (zero updates until `setup` or a checkpoint)."""
        model = self.ctx.model
        found = matching_layers(model, self.params.target_modules)
        for key, names in found.items():
            if not names:
                layers = sorted({n.split(".")[-1] for n, m in model.named_modules()
                                 if isinstance(m, (nn.Conv2d, nn.Linear))})
                raise ConfigError(
                    f"lora.target_modules: {key!r} names no Conv2d or Linear layer of the "
                    f"model; its layers' names end with: {', '.join(layers)}")
        targeted = {n for names in found.values() for n in names}
        weights = [f"{n}.weight" for n, _ in model.named_modules() if n in targeted]
        self.adapters = LoRAAdapters(model, weights, self.params.rank, self.params.alpha)
        self.adapters.to(model.device)
        self.view = LoRAView(model, self.adapters)

    def setup(self) -> None:
        """A drawn from the run's RNG (fresh runs; a resumed run loads the factors)."""
        self.adapters.reset(self.params.init)

    def extra_modules(self) -> list[nn.Module]:
        return [self.adapters]

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """None of the UNet's own weights: only the factors (`extra_modules`) train."""
        return iter(())

    def denoiser(self) -> nn.Module:
        return self.view
