"""The one entry point for diffusion sources: a diffusers folder, an adaptscope diffusion file,
or a guided-diffusion (ADM) checkpoint, each loaded strictly on the CPU as a `DiffusionModel`.

Why one entry point: a run names its source by path; what the path holds decides the loader,
so a config never has to say which kind of file it gives. ADM checkpoints are plain state dicts
with no recorded configuration: the architecture is read off the tensors' names and shapes
(`infer_adm_config`), and what the tensors cannot show (attention heads, attention order,
dropout) follows the FFHQ-256 preset, the configuration of every public 256 px ADM model
(FFHQ, LSUN, ImageNet-unconditional), unless a preset is named.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from adaptscope.errors import CheckpointError
from adaptscope.files import load_weights_only
from adaptscope.models.adm import (
    DEFAULT_CHANNEL_MULT,
    FFHQ256,
    ADMConfig,
    ADMUNet,
)
from adaptscope.models.adm import adm_preset as preset_config
from adaptscope.models.diffusers_folder import load_diffusers_folder
from adaptscope.models.diffusion import DiffusionModel, LoadedDiffusion, load_diffusion

ADM_KEYS = ("time_embed.0.weight", "input_blocks.0.0.weight", "out.2.weight")
_ACCEPTED = ("give a diffusers folder, a diffusion checkpoint written by adaptscope, or a "
             "guided-diffusion (ADM) state dict (.pt)")


def adm_linear_schedule(steps: int = 1000) -> dict[str, Any]:
    """guided-diffusion's `noise_schedule linear`: betas linspace(1e-4 s, 0.02 s, steps) with
    s = 1000 / steps (gaussian_diffusion.py:27-35 at 22e0df8), as a diffusers schedule. The
    model sees the unscaled step index, 0..steps-1, as diffusers' schedulers give it
    (`rescale_timesteps` False, script_util.py:22; a respaced sampler maps its steps back to
    these, respace.py:117-128)."""
    scale = 1000 / steps
    return {"num_train_timesteps": steps, "beta_start": scale * 0.0001,
            "beta_end": scale * 0.02, "beta_schedule": "linear", "prediction_type": "epsilon"}


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _adm_state(obj: Any) -> dict[str, torch.Tensor] | None:
    """The guided-diffusion state dict in a loaded file (bare, or saved from a DataParallel /
    DDP wrapper with its `module.` prefix), or None."""
    if not _is_state_dict(obj):
        return None
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj if all(k in obj for k in ADM_KEYS) else None


def _blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def infer_adm_config(state: dict[str, torch.Tensor], base: ADMConfig = FFHQ256) -> ADMConfig:
    """The configuration of a guided-diffusion UNet state dict.

    Read off the tensors: num_channels (the timestep MLP's input width), channel_mult (each
    level's first block width), num_res_blocks and resblock_updown (where and what the decoder's
    upsamplers are), learn_sigma (6 output channels), use_scale_shift_norm (the embedding
    projection's width), the attention levels, and image_size (guided-diffusion's default
    channel_mult for it, script_util.py:148-158). The rest comes from `base`."""
    try:
        num_channels = state["time_embed.0.weight"].shape[1]
        if state["input_blocks.0.0.weight"].shape[1] != 3 or "label_emb.weight" in state:
            raise CheckpointError("a class-conditional or super-resolution ADM (only "
                                  "unconditional RGB models are supported)")
        out_channels = state["out.2.weight"].shape[0]
        if out_channels not in (3, 6):
            raise CheckpointError(f"an ADM with {out_channels} output channels (3, or 6 with "
                                  "a learned variance, are supported)")
        n_out = _blocks(state, "output_blocks")

        def upsampler(j: int) -> str | None:
            """What upsamples at the end of decoder block j: a ResBlock, a conv, or nothing."""
            tail = [int(m.group(1)) for k in state
                    if (m := re.match(rf"output_blocks\.{j}\.(\d+)\.(in_layers\.0|conv)\.weight$",
                                      k)) and int(m.group(1)) > 0]
            if not tail:
                return None
            k = max(tail)
            return "res" if f"output_blocks.{j}.{k}.in_layers.0.weight" in state else "conv"

        ups = [j for j in range(n_out) if upsampler(j)]
        num_res_blocks = ups[0] if ups else n_out - 1
        per_level = num_res_blocks + 1
        levels = n_out // per_level
        if (num_res_blocks < 1 or n_out % per_level
                or ups != [per_level * i + num_res_blocks for i in range(levels - 1)]):
            raise CheckpointError(f"an ADM whose {n_out} decoder blocks do not form levels of "
                                  "equal depth")
        mults, attention_ds = [], set()
        for level in range(levels):
            first = 1 + level * per_level  # the level's first encoder block
            width = state[f"input_blocks.{first}.0.out_layers.3.weight"].shape[0]
            mults.append(width // num_channels if width % num_channels == 0
                         else width / num_channels)
            if f"input_blocks.{first}.1.qkv.weight" in state:
                attention_ds.add(2**level)
        width0 = state["input_blocks.1.0.out_layers.3.weight"].shape[0]
        scale_shift = state["input_blocks.1.0.emb_layers.1.weight"].shape[0] == 2 * width0
    except KeyError as err:
        raise CheckpointError(f"not a guided-diffusion UNet state dict: no tensor {err}") from err
    sizes = [size for size, mult in DEFAULT_CHANNEL_MULT.items() if mult == tuple(mults)]
    if not sizes:
        raise CheckpointError(
            f"an ADM with channel_mult {tuple(mults)}, not guided-diffusion's default for any "
            "image size, so its image size cannot be told from the weights; add a preset for it "
            "(adaptscope.models.adm.ADM_PRESETS) and name it")
    image_size = sizes[0]
    try:
        return replace(base, image_size=image_size, num_channels=num_channels,
                       num_res_blocks=num_res_blocks, channel_mult=tuple(mults),
                       attention_resolutions=tuple(image_size // ds for ds in attention_ds),
                       learn_sigma=out_channels == 6, use_scale_shift_norm=scale_shift,
                       resblock_updown=upsampler(ups[0]) == "res" if ups else base.resblock_updown)
    except ValueError as err:  # the base's head settings do not fit these widths
        raise CheckpointError(f"an ADM the preset's attention settings do not fit ({err}); "
                              "name a preset that matches it") from err


def _mismatch(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    return [f"{label} {len(keys)} tensors, e.g. {keys[:3]}"
            for label, keys in (("missing", missing), ("unexpected", unexpected),
                                ("wrong shapes:", wrong)) if keys]


def load_adm(path: Path, state: dict[str, torch.Tensor], preset: str | None = None
             ) -> LoadedDiffusion:
    """An ADM state dict as a `DiffusionModel`, strictly: the named preset's configuration, else
    the one the tensors show. Built on the meta device and handed the file's tensors, so a
    550M-parameter model is never initialised only to be overwritten."""
    try:
        config = preset_config(preset) if preset else infer_adm_config(state)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err
    with torch.device("meta"):
        net = ADMUNet(config)
    problems = _mismatch(state, net.state_dict())
    if problems:
        told = f"preset {preset!r}" if preset else "the configuration its tensors show"
        raise CheckpointError(f"{path}: the ADM weights do not match {told} ({config}): "
                              + "; ".join(problems)
                              + ("; check the preset, or name none to infer it" if preset
                                 else "; the file is damaged or not an unconditional ADM"))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                        strict=True, assign=True)
    model = DiffusionModel(net, adm_linear_schedule(1000), size=config.image_size, kind="adm")
    model.eval()
    extra = {"adm_config": asdict(config),
             "adm_config_from": f"preset {preset}" if preset else "the weights' shapes"}
    return LoadedDiffusion(path, "adm", model, extra)


def load_diffusion_source(path: str | os.PathLike, adm_preset: str | None = None
                          ) -> LoadedDiffusion:
    """Whatever diffusion source `path` is, loaded strictly on the CPU, in eval mode.

    A folder is a diffusers model; a file is adaptscope's own format (its format tag) or a
    guided-diffusion state dict (its key names), whose configuration `adm_preset` names when
    the weights alone do not tell it."""
    p = Path(path)
    if p.is_dir():
        if adm_preset:
            raise CheckpointError(f"{p} is a diffusers folder: an ADM preset ({adm_preset!r}) "
                                  "applies to guided-diffusion checkpoints only; remove it")
        return load_diffusers_folder(p)
    if not p.exists():
        raise CheckpointError(f"diffusion source {p} does not exist; {_ACCEPTED}")
    obj = load_weights_only(p, what="diffusion checkpoint", error=CheckpointError,
                            fix=_ACCEPTED)
    if isinstance(obj, dict) and str(obj.get("format", "")).startswith("adaptscope-diffusion"):
        if adm_preset:
            raise CheckpointError(f"{p} is an adaptscope diffusion checkpoint: an ADM preset "
                                  f"({adm_preset!r}) applies to guided-diffusion checkpoints "
                                  "only; remove it")
        loaded = load_diffusion(p)
        loaded.model.eval()
        return loaded
    state = _adm_state(obj)
    if state is not None:
        return load_adm(p, state, adm_preset)
    if isinstance(obj, dict) and ("g_ema" in obj or str(obj.get("format", "")).startswith(
            "adaptscope-checkpoint")):
        raise CheckpointError(f"{p} is a StyleGAN2 checkpoint, not a diffusion model; use it "
                              "as a GAN source, or " + _ACCEPTED)
    found = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(f"{p} is no diffusion model adaptscope knows (found {found}; a "
                          f"guided-diffusion state dict has {', '.join(ADM_KEYS)}); "
                          + _ACCEPTED)
