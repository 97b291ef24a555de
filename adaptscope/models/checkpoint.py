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


# What a StyleGAN2 can be: a recorded configuration outside these bounds is refused before it
# builds anything, so a damaged or hostile file cannot make the loader allocate without bound.
MAX_SIZE = 4096
MAX_WIDTH = 4096
_INT_LIMITS = {"style_dim": (1, 4096), "n_mlp": (1, 32), "channel_multiplier": (1, 8)}
_CONFIG_KEYS = {"g_config": ("size", "style_dim", "n_mlp", "channel_multiplier", "lr_mlp",
                             "channels"),
                "d_config": ("size", "channel_multiplier", "channels")}
_DAMAGED = "the file is damaged or was not written by adaptscope; use another checkpoint"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _widths(config: dict[str, Any]) -> dict[int, int]:
    """Width per resolution from 4 px up to the network's size."""
    widths = config.get("channels") or reference_channels(config.get("channel_multiplier", 2))
    return {2**i: widths[2**i] for i in range(2, config["size"].bit_length())}


def _checked_config(raw: Any, key: str, path: Path) -> dict[str, Any]:
    """The constructor arguments recorded under `key`, each within what a StyleGAN2 can be."""

    def bad(name: Any, why: str) -> CheckpointError:
        return CheckpointError(f"{path}: {key}[{name!r}] {why}; {_DAMAGED}")

    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: {key} is a {type(raw).__name__}, expected a dict of "
                              f"constructor arguments; {_DAMAGED}")
    unknown = [k for k in raw if k not in _CONFIG_KEYS[key]]
    if unknown:
        raise bad(unknown[0], f"is not one of {', '.join(_CONFIG_KEYS[key])}")
    config = dict(raw)
    size = config.get("size")
    if not _is_int(size) or not 8 <= size <= MAX_SIZE or size & (size - 1):
        raise bad("size", f"= {size!r} is not a power of two from 8 to {MAX_SIZE}")
    for name, (lo, hi) in _INT_LIMITS.items():
        if name in config and not (_is_int(config[name]) and lo <= config[name] <= hi):
            raise bad(name, f"= {config[name]!r} is not a whole number from {lo} to {hi}")
    lr_mlp = config.get("lr_mlp", 0.01)
    if not isinstance(lr_mlp, (int, float)) or isinstance(lr_mlp, bool) or not (
            0 < lr_mlp < float("inf")):
        raise bad("lr_mlp", f"= {lr_mlp!r} is not a positive finite number")
    channels = config.get("channels")
    if channels is None:
        if size > 1024:
            raise bad("size", f"= {size} has no reference widths (they stop at 1024 px) and no "
                      "'channels' are recorded")
        return config
    try:
        widths = {int(r): w for r, w in channels.items()}  # keys may have become strings
    except (AttributeError, TypeError, ValueError):
        raise bad("channels", f"= {channels!r:.80} is not a mapping of resolution to width"
                  ) from None
    missing = [2**i for i in range(2, size.bit_length()) if 2**i not in widths]
    if missing:
        raise bad("channels", f"gives no width for {missing[0]} px")
    wrong = [(r, w) for r, w in widths.items() if not (_is_int(w) and 1 <= w <= MAX_WIDTH)]
    if wrong:
        raise bad("channels", f"gives {wrong[0][0]} px a width of {wrong[0][1]!r}, not a whole "
                  f"number from 1 to {MAX_WIDTH}")
    return {**config, "channels": widths}


def _network_config(obj: dict[str, Any], key: str, state: dict[str, torch.Tensor], what: str,
                    path: Path, lr_mlp: float) -> dict[str, Any]:
    """Constructor arguments of the network in `obj[what]`: adaptscope's recorded ones, checked
    against its tensors (so nothing larger than the file is built), or those the tensors show."""
    infer = infer_generator_config if key == "g_config" else infer_discriminator_config
    try:
        inferred = infer(state)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: '{what}' is {err}") from err
    if obj.get("format") != FORMAT_TAG:
        return {**inferred, "lr_mlp": lr_mlp} if key == "g_config" else inferred
    config = _checked_config(obj.get(key), key, path)
    for name in ("size", "style_dim", "n_mlp"):
        if name in config and name in inferred and config[name] != inferred[name]:
            raise CheckpointError(
                f"{path}: {key}[{name!r}] = {config[name]} but the '{what}' tensors have "
                f"{inferred[name]}{' px' if name == 'size' else ''}; {_DAMAGED}")
    if _widths(config) != _widths(inferred):
        name = "channels" if config.get("channels") is not None else "channel_multiplier"
        raise CheckpointError(
            f"{path}: {key}[{name!r}] gives the widths {_widths(config)} but the '{what}' "
            f"tensors have {_widths(inferred)}; {_DAMAGED}")
    return config


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
    # Every configuration is checked before any network is built.
    todo = [(key, Generator, "g_config") for key in gen_keys]
    if _is_state_dict(obj.get("d")):
        todo.append(("d", Discriminator, "d_config"))
    planned = []
    for key, cls, config_key in todo:
        state = _strip_prefix(obj[key])
        config = _network_config(obj, config_key, state, key, path, lr_mlp)
        if cls is Generator and size is not None and config["size"] != size:
            raise CheckpointError(
                f"{path} holds a {config['size']} px generator but {size} px was requested; "
                "use a checkpoint of the right resolution or change the configured size"
            )
        planned.append((key, cls, config, state))
    nets = {key: _build(cls, config, state, key, path) for key, cls, config, state in planned}
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
    kept = "the one it replaces is intact" if Path(path).exists() else "nothing was written"
    try:
        save_torch(obj, path)
    except OSError as err:  # a full disk, a quota, a lost mount
        raise CheckpointError(
            f"{path}: cannot write the checkpoint ({err.strerror or err}); {kept}. Make room (or "
            "fix the folder) and continue: `adaptscope run --resume` for a run") from err
