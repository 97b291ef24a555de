"""Building the real metric backbones from resolved weight files, without hidden downloads.

`lpips.LPIPS` fetches its trunk through torchvision unless `pnet_rand=True`; clean-fid fetches
Inception into a temporary folder unless told otherwise; pytorch-fid, torchvision and DINOv2's hub
entry download through `load_state_dict_from_url`. Here the network is always built without a
download and the file found by `resolve_weights` is loaded explicitly.
"""

from __future__ import annotations

import contextlib
import math
import os
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adaptscope.errors import WeightsError
from adaptscope.files import load_weights_only
from adaptscope.metrics.weights import (
    BACKBONES,
    FOLDER_BACKBONES,
    resolve_weights,
    resolve_weights_dir,
)

LPIPS_NETS = ("vgg", "alex")


@contextlib.contextmanager
def _vgg_trunk_only() -> Iterator[None]:
    """Let lpips build VGG-16 without its classifier: lpips keeps only `.features`, and the
    classifier (124 M parameters) would cost seconds and 500 MB of memory to initialise."""
    import lpips.pretrained_networks as pn
    import torchvision

    def vgg16(pretrained: bool = False, **_: object) -> types.SimpleNamespace:
        if pretrained:
            raise RuntimeError("adaptscope loads VGG weights itself; pretrained must be False")
        cfg = torchvision.models.vgg.cfgs["D"]
        return types.SimpleNamespace(features=torchvision.models.vgg.make_layers(cfg))

    original = pn.tv
    pn.tv = types.SimpleNamespace(vgg16=vgg16, alexnet=original.alexnet,
                                  squeezenet1_1=original.squeezenet1_1)
    try:
        yield
    finally:
        pn.tv = original


def new_lpips(net: str = "vgg") -> nn.Module:
    """An `lpips.LPIPS` with the shipped linear heads and a random trunk (no download)."""
    import lpips

    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS backbone must be one of {LPIPS_NETS}, got {net!r}")
    with warnings.catch_warnings(), _vgg_trunk_only():
        # torchvision warns about the deprecated `pretrained` argument that lpips passes.
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()


def load_lpips_trunk(model: nn.Module, state_dict: dict, source: str = "state dict") -> None:
    """Copy a torchvision VGG-16 / AlexNet state dict (`features.<i>.*` keys) into the trunk
    of an `lpips.LPIPS` model, whose slices keep torchvision's layer indices as names."""
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    mapped: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    trunk = model.net
    for name, tensor in trunk.state_dict().items():
        _, index, leaf = name.split(".", 2)  # "slice<k>.<i>.<weight|bias>"
        key = f"features.{index}.{leaf}"
        if key not in state:
            missing.append(key)
            continue
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"{source}: '{key}' has shape {tuple(state[key].shape)}, the {model.pnet_type} "
                f"trunk expects {tuple(tensor.shape)}; is this the right network's file?"
            )
        mapped[name] = state[key]
    if missing:
        raise ValueError(
            f"{source} is not a torchvision {model.pnet_type} state dict: missing "
            f"{len(missing)} trunk entries (first: {missing[0]})"
        )
    trunk.load_state_dict(mapped, strict=True)


def build_lpips(net: str = "vgg", weights_dir: str | os.PathLike | None = None) -> nn.Module:
    """`lpips.LPIPS(net)` v0.1 with ImageNet trunk weights from `resolve_weights(net)`."""
    model = new_lpips(net)
    path = resolve_weights(net, weights_dir)
    state = _load_state(path)
    load_lpips_trunk(model, state, source=str(path))
    return model


def build_inception(
    weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """clean-fid's `InceptionV3W` (clean mode: expects 299x299 inputs in [0, 255])."""
    from cleanfid.inception_torchscript import InceptionV3W

    path = resolve_weights("inception", weights_dir)
    try:
        model = InceptionV3W(str(path.parent), download=False, resize_inside=False)
    except RuntimeError as err:
        raise ValueError(f"{path} is not a loadable Inception TorchScript file: {err}") from err
    return model.to(device).eval()


def _load_state(path: Path) -> dict:
    state = load_weights_only(path, what="state dict", fix="it could not be loaded: delete it so "
                              "that it is fetched again, or replace it with the right file")
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def _wrong_file(path: Path, backbone: str, problem: str) -> WeightsError:
    spec = BACKBONES[backbone]
    return WeightsError(f"{path} is not the {spec.description} ({spec.filename}): {problem}; "
                        f"replace it with the file from {spec.url}")


def _state_mismatch(model: nn.Module, state: dict) -> str | None:
    """What keeps `state` from loading strictly into `model`, in one line (None: nothing)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and torch.is_tensor(state[k])
              and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = [f"{len(keys)} {what} (first: '{keys[0]}')" for keys, what in
                [(missing, "entries missing"), (unexpected, "unexpected entries"),
                 (shapes, "entries of another shape")] if keys]
    return ", ".join(problems) or None


def _with_bn_counters(model: nn.Module, state: dict) -> dict:
    """Files saved before PyTorch 0.4.1 lack BatchNorm's `num_batches_tracked` counters, which
    eval mode never reads (torch fills them in for such files); add them so that the strict
    check below concerns everything else."""
    missing = [k for k in model.state_dict()
               if k.endswith(".num_batches_tracked") and k not in state]
    if not missing:
        return state
    return {**state, **{k: torch.tensor(0, dtype=torch.long) for k in missing}}


def _load_strict(model: nn.Module, state: dict, path: Path, backbone: str,
                 assign: bool = False) -> None:
    """`load_state_dict(strict=True)`, failing with one error that names the file and the fix."""
    state = _with_bn_counters(model, state)
    problem = _state_mismatch(model, state)
    if problem:
        raise _wrong_file(path, backbone, problem)
    model.load_state_dict(state, strict=True, assign=assign)


@contextlib.contextmanager
def _served_download(module: types.ModuleType, url: str, state: dict) -> Iterator[None]:
    """Within the block, `module.load_state_dict_from_url(url)` returns `state` (any other URL
    fails), so a library's own constructor runs unchanged and cannot download."""

    def serve(requested: str, *_: object, **__: object) -> dict:
        if requested != url:
            raise RuntimeError(f"adaptscope refused a download of {requested}")
        return state

    original = module.load_state_dict_from_url
    module.load_state_dict_from_url = serve
    try:
        yield
    finally:
        module.load_state_dict_from_url = original


def build_pytorch_fid_inception(
    weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """pytorch-fid's `InceptionV3([3])` (pool3, 2048-D), built by pytorch-fid's own
    `fid_inception_v3` (pytorch_fid/inception.py:197-221, which patches the FID blocks into
    torchvision's Inception) with the resolved file served in place of its download (line 219).
    Expects [0, 1] images of any size: it resizes to 299 itself (bilinear, lines 146-150) and maps
    [0, 1] to [-1, 1] (line 153)."""
    import pytorch_fid.inception as pfi

    path = resolve_weights("pytorch-fid-inception", weights_dir)
    state = _load_state(path)
    try:
        with _served_download(pfi, pfi.FID_WEIGHTS_URL, state):
            model = pfi.InceptionV3([3], resize_input=True, normalize_input=True)
    except RuntimeError as err:  # load_state_dict(strict=True) inside fid_inception_v3
        problem = " ".join(str(err).split())
        problem = problem if len(problem) <= 240 else problem[:240] + " ..."
        raise _wrong_file(path, "pytorch-fid-inception", problem) from err
    return model.to(device).eval()


def build_torchvision_inception(
    weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """torchvision's Inception-v3 with its ImageNet weights, returning the 2048-D pool features
    (the input of `fc`) of 299x299 inputs in [-1, 1], as AdAM and RICK compute FID.

    `transform_input=True` applies torchvision's per-channel affine x * std/0.5 + (mean - 0.5)/0.5
    (torchvision/models/inception.py:95-100), the very formula AdAM applies by hand before the
    blocks (AdAM gan_training/metrics/inception.py:92-96); their blocks 0-3 (lines 38-78) are
    torchvision's forward up to `avgpool`, so with `fc` removed the net returns their features.
    """
    import torchvision

    path = resolve_weights("torchvision-inception", weights_dir)
    state = _load_state(path)
    with torch.device("meta"):  # nothing initialised only to be overwritten
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    _load_strict(net, state, path, "torchvision-inception", assign=True)
    net.transform_input = True
    net.fc = nn.Identity()
    return net.float().to(device).eval()


DINOV2_POS_OFFSET = 0.1  # DinoVisionTransformer(interpolate_offset=0.1), the hub default


def dinov2_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """DINOv2's position embedding (1, 1 + M*M, D) brought to a `grid` of patches the way DINOv2
    itself does at every forward (facebookresearch/dinov2 @ b8931f7,
    dinov2/models/vision_transformer.py:180-212, unchanged in effect since the first release):
    bicubic, no antialiasing, scale factor (grid + 0.1) / M. timm's checkpoint_filter_fn would
    resample with size=grid and antialias=True, which gives other features than dgm-eval's."""
    if pos_embed.ndim != 3:
        raise ValueError(f"position embedding of shape {tuple(pos_embed.shape)}, not (1, N, D)")
    n = pos_embed.shape[1] - 1
    m = math.isqrt(n)
    if m * m != n:
        raise ValueError(f"position embedding of {n} patches is not a square grid")
    if (m, m) == tuple(grid):
        return pos_embed
    dim = pos_embed.shape[-1]
    cls, patches = pos_embed[:, :1].float(), pos_embed[:, 1:].float()
    scale = tuple(float(g + DINOV2_POS_OFFSET) / m for g in grid)
    patches = F.interpolate(patches.reshape(1, m, m, dim).permute(0, 3, 1, 2),
                            scale_factor=scale, mode="bicubic", antialias=False)
    if tuple(patches.shape[-2:]) != tuple(grid):
        raise ValueError(f"resampling {m}x{m} positions gave {tuple(patches.shape[-2:])}")
    patches = patches.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat([cls, patches], dim=1).to(pos_embed.dtype)


def build_dinov2_vitb14(
    weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
    img_size: int = 224,
) -> nn.Module:
    """DINOv2 ViT-B/14 as timm's `vit_base_patch14_dinov2` at `img_size`, returning the CLS
    token after the final norm (768-D), i.e. what `torch.hub.load('facebookresearch/dinov2',
    'dinov2_vitb14')(x)` returns (dinov2/models/vision_transformer.py:325-330) and dgm-eval uses.

    Loads the official file (Facebook's key names): the position embedding is resampled to the
    patch grid as DINOv2 does (`dinov2_pos_embed`), then timm's `checkpoint_filter_fn` drops
    `mask_token` (timm/models/vision_transformer.py:1781-1801). Built on the meta device, so
    nothing is initialised only to be overwritten.
    """
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    path = resolve_weights("dinov2-vit-b14", weights_dir)
    state = dict(_load_state(path))
    with torch.device("meta"):
        model = timm.create_model("vit_base_patch14_dinov2.lvd142m", pretrained=False,
                                  img_size=img_size, num_classes=0)
    if "mask_token" not in state or not torch.is_tensor(state.get("pos_embed")):
        raise _wrong_file(path, "dinov2-vit-b14", "no 'mask_token' and 'pos_embed' entries, so "
                          "it is no DINOv2 checkpoint in Facebook's format")
    try:
        state["pos_embed"] = dinov2_pos_embed(state["pos_embed"], model.patch_embed.grid_size)
    except ValueError as err:
        raise _wrong_file(path, "dinov2-vit-b14", str(err)) from err
    state = checkpoint_filter_fn(state, model)
    _load_strict(model, state, path, "dinov2-vit-b14", assign=True)
    return model.float().to(device).eval()


# CLIP's text tower and temperature, in a full CLIPModel folder such as the official one; the
# image tower ignores them.
_CLIP_TEXT_KEYS = ("text_model.", "text_projection.", "logit_scale")


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' loading report and progress bars off for the block (the strict check
    below reports what matters, in one error)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def build_clip_vision(
    weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """transformers' `CLIPVisionModelWithProjection` from the folder `resolve_weights_dir`
    finds (OpenAI's `openai/clip-vit-large-patch14-336`), loaded with `local_files_only`, in
    float32 and eval mode.

    The official folder holds the whole CLIPModel; its image tower (`vision_model.*`) and
    `visual_projection` are exactly this model's parameters, and the text tower is left out.
    Loading is strict otherwise: a parameter of the image tower missing, of another shape, or
    an entry that belongs to neither tower fails with one error naming the folder, since a
    missing one would be silently random."""
    from transformers import CLIPVisionModelWithProjection

    folder = resolve_weights_dir("clip-vit-l14-336", weights_dir)
    spec = FOLDER_BACKBONES["clip-vit-l14-336"]
    try:
        with _quiet_transformers():
            model, info = CLIPVisionModelWithProjection.from_pretrained(
                folder, local_files_only=True, output_loading_info=True, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        problem = " ".join(str(err).split())
        problem = problem if len(problem) <= 240 else problem[:240] + " ..."
        raise WeightsError(f"{folder} is not a loadable {spec.description} folder: {problem}; "
                           f"replace it with the files from {spec.url}") from err
    missing = sorted(info.get("missing_keys") or [])
    shapes = sorted(str(k[0] if isinstance(k, tuple) else k)
                    for k in info.get("mismatched_keys") or [])
    foreign = sorted(k for k in info.get("unexpected_keys") or []
                     if not k.startswith(_CLIP_TEXT_KEYS))
    problems = [f"{len(keys)} {what} (first: '{keys[0]}')" for keys, what in
                [(missing, "entries missing"), (shapes, "entries of another shape"),
                 (foreign, "unexpected entries")] if keys]
    if problems:
        raise WeightsError(f"{folder} is not the {spec.description}: {', '.join(problems)}; "
                           f"replace it with the files from {spec.url}")
    return model.float().to(device).eval()
