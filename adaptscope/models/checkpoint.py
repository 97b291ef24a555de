"""Strict, safe loading of StyleGAN2 checkpoints in every layout the literature publishes.

Public repositories load with `strict=False`, so a wrong file loads silently; here the
architecture is inferred from the tensors, every tensor must match, and files are read with
`weights_only=True` so nothing is executed while loading.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adaptscope.errors import CheckpointError
from adaptscope.files import load_weights_only, save_torch
from adaptscope.models.stylegan2 import Discriminator, Generator, reference_channels

FORMAT_TAG = "adaptscope-checkpoint-v1"
GENERATOR_KEYS = ("g_ema", "g")


@dataclass
class LoadedCheckpoint:
    """Networks built from a checkpoint; `g` and `d` are None when the file has only `g_ema`."""

    path: Path
    kind: str
    g_ema: Generator
    g: Generator | None = None
    d: Discriminator | None = None
    latent_avg: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _read(path: Path) -> Any:
    # argparse.Namespace holds the training arguments in reference training checkpoints; it is
    # plain data, so allowing it keeps loading free of code execution.
    fix = ("for a pickled NVIDIA network, convert it to a PyTorch state dict first (for example "
           "with the rosinality repository's convert_weight.py); otherwise re-save it as a dict "
           "of state dicts (torch.save({'g_ema': g_ema.state_dict()}, path)) in a trusted "
           "environment, or check the path in your config")
    return load_weights_only(path, what="PyTorch checkpoint", fix=fix, error=CheckpointError,
                             safe_globals=[argparse.Namespace])


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def infer_generator_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Size, style width, mapping depth and per-resolution widths read off the tensors."""
    try:
        style_dim = state["conv1.conv.modulation.weight"].shape[1]
        channels = {4: state["input.input"].shape[1]}
        n_mlp = sum(1 for k in state if re.fullmatch(r"style\.\d+\.weight", k))
        n_rgbs = sum(1 for k in state if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k))
        for i in range(n_rgbs):
            channels[2 ** (i + 3)] = state[f"convs.{2 * i}.conv.weight"].shape[1]
    except KeyError as err:
        raise CheckpointError(f"not a StyleGAN2 generator state dict: missing {err}") from err
    size = 2 ** (n_rgbs + 2)
    for cm in (1, 2, 4):
        ref = reference_channels(cm)
        if all(ref[r] == c for r, c in channels.items()):
            return {"size": size, "style_dim": style_dim, "n_mlp": n_mlp,
                    "channel_multiplier": cm, "channels": None}
    return {"size": size, "style_dim": style_dim, "n_mlp": n_mlp, "channel_multiplier": 2,
            "channels": channels}


def infer_discriminator_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Size and widths of a discriminator state dict."""
    try:
        first = state["convs.0.0.weight"].shape[0]
        n_blocks = sum(1 for k in state if re.fullmatch(r"convs\.\d+\.conv2\.1\.weight", k))
        size = 2 ** (n_blocks + 2)
        channels = {size: first}
        for i in range(1, n_blocks + 1):
            channels[size // 2**i] = state[f"convs.{i}.conv2.1.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"not a StyleGAN2 discriminator state dict: missing {err}") from err
    for cm in (1, 2, 4):
        ref = reference_channels(cm)
        if all(ref[r] == c for r, c in channels.items()):
            return {"size": size, "channel_multiplier": cm, "channels": None}
    return {"size": size, "channel_multiplier": 2, "channels": channels}


def _build(cls: type, config: dict[str, Any], state: dict[str, torch.Tensor], what: str,
           path: Path) -> torch.nn.Module:
    net = cls(**config)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors, e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors, e.g. {unexpected[:3]}")
        if wrong:
            parts.append(f"wrong shapes: {wrong[:3]}")
        raise CheckpointError(
            f"{path}: '{what}' does not match a StyleGAN2 {cls.__name__} {config}: "
            + "; ".join(parts)
        )
    net.load_state_dict(state, strict=True)
    return net


def load_checkpoint(
    path: str | os.PathLike,
    *,
    size: int | None = None,
    lr_mlp: float = 0.01,
) -> LoadedCheckpoint:
    """Load any supported StyleGAN2 checkpoint on the CPU, strictly.

    Accepted layouts: reference training checkpoints (`g`, `d`, `g_ema`, optimisers, `args`),
    converted NVIDIA weights (`g_ema`, `latent_avg`), adapted generators (`g_ema` only, possibly
    with a `module.` prefix), a bare generator state dict, and adaptscope's own checkpoints
    (which also record the constructor arguments). `size`, when given, must match.
    """
    path = Path(path)
    obj = _read(path)
    if _is_state_dict(obj):
        obj = {"g_ema": obj}
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, expected a dict with a 'g_ema' or 'g' "
            "generator state dict"
        )
    own = obj.get("format") == FORMAT_TAG
    gen_keys = [k for k in GENERATOR_KEYS if _is_state_dict(obj.get(k))]
    if not gen_keys:
        raise CheckpointError(
            f"{path} has no generator: expected a 'g_ema' or 'g' state dict, found keys "
            f"{sorted(map(str, obj))[:10]}"
        )
    nets: dict[str, torch.nn.Module] = {}
    for key in gen_keys:
        state = _strip_prefix(obj[key])
        config = dict(obj["g_config"]) if own else {**infer_generator_config(state),
                                                    "lr_mlp": lr_mlp}
        if config.get("channels") is not None:
            config["channels"] = {int(k): int(v) for k, v in config["channels"].items()}
        if size is not None and config["size"] != size:
            raise CheckpointError(
                f"{path} holds a {config['size']} px generator but {size} px was requested; "
                "use a checkpoint of the right resolution or change the configured size"
            )
        nets[key] = _build(Generator, config, state, key, path)
    if _is_state_dict(obj.get("d")):
        state = _strip_prefix(obj["d"])
        config = dict(obj["d_config"]) if own else infer_discriminator_config(state)
        if config.get("channels") is not None:
            config["channels"] = {int(k): int(v) for k, v in config["channels"].items()}
        nets["d"] = _build(Discriminator, config, state, "d", path)
    kind = "adaptscope" if own else ("training" if "d" in nets else
                                     "converted" if "latent_avg" in obj else "generator")
    g_ema = nets.get("g_ema", nets.get("g"))
    extra = {k: v for k, v in obj.items() if k not in ("g", "d", "g_ema", "latent_avg")}
    return LoadedCheckpoint(path=path, kind=kind, g_ema=g_ema, g=nets.get("g"),
                            d=nets.get("d"), latent_avg=obj.get("latent_avg"), extra=extra)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    g_ema: Generator,
    g: Generator | None = None,
    d: Discriminator | None = None,
    **extra: Any,
) -> None:
    """Save networks with their constructor arguments (plus any tensors/plain data in `extra`)."""
    obj: dict[str, Any] = {"format": FORMAT_TAG, "g_ema": g_ema.state_dict(),
                           "g_config": g_ema.config}
    if g is not None:
        obj["g"] = g.state_dict()
    if d is not None:
        obj["d"] = d.state_dict()
        obj["d_config"] = d.config
    obj.update(extra)
    save_torch(obj, path)
