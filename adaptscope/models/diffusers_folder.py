"""Diffusion sources saved by diffusers: a pipeline folder or a bare UNet folder, read offline.

Why a loader of its own: `from_pretrained` accepts much that adaptscope cannot use (a
text-conditioned UNet, a latent pipeline, a v-prediction schedule) and fills missing weights
with random ones after a warning; here each of those is one `CheckpointError` naming the folder
and what to do, and every weight must be in the file (missing, unexpected and mis-shaped
tensors are refused, as adaptscope's own loaders do).

Accepted layouts:
- a pipeline folder (DDPMPipeline / DDIMPipeline `save_pretrained`): `model_index.json`,
  `unet/` (`config.json` and `diffusion_pytorch_model.safetensors` or `.bin`) and
  `scheduler/scheduler_config.json`;
- a UNet folder (`UNet2DModel.save_pretrained`): `config.json` and the weights; the schedule
  comes from a `scheduler_config.json` in the same folder, else from `../scheduler/` when the
  folder is a pipeline's `unet/`, else it is `DEFAULT_SCHEDULE` (Ho et al.'s linear schedule).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from adaptscope.errors import CheckpointError
from adaptscope.models.diffusion import DEFAULT_SCHEDULE, DiffusionModel, LoadedDiffusion

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                "diffusion_pytorch_model.safetensors.index.json",
                "diffusion_pytorch_model.bin.index.json")
PIPELINE_PARTS = ("unet", "scheduler")
_WHAT = ("an unconditional pixel-space diffusers model: a DDPM/DDIM pipeline folder "
         "(model_index.json, unet/, scheduler/) or a UNet2DModel folder (config.json and "
         "diffusion_pytorch_model.safetensors)")


def _fail(where: Path, why: str, fix: str) -> CheckpointError:
    return CheckpointError(f"{where}: {why}; {fix}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(path, "does not exist", f"a diffusers folder holds {_WHAT}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _fail(path, f"cannot be read as JSON ({err})",
                    "replace it with the file diffusers' save_pretrained wrote") from err
    if not isinstance(data, dict):
        raise _fail(path, f"holds a JSON {type(data).__name__}, not an object",
                    "replace it with the file diffusers' save_pretrained wrote")
    return data


def _pipeline_parts(root: Path, index: dict[str, Any]) -> tuple[Path, Path]:
    """The UNet folder and scheduler config of a pipeline folder, once the pipeline is one
    adaptscope can sample: a UNet2DModel and a scheduler, nothing else."""
    name = index.get("_class_name", "pipeline")
    unet_entry = index.get("unet")
    unet_class = unet_entry[-1] if isinstance(unet_entry, list) and unet_entry else None
    if unet_class is None:
        raise _fail(root / "model_index.json", f"the {name} has no unet",
                    f"give {_WHAT}")
    if unet_class != "UNet2DModel":
        raise _unsupported_unet(root / "model_index.json", unet_class)
    others = sorted(k for k, v in index.items() if not k.startswith("_")
                    and k not in PIPELINE_PARTS and v not in (None, [None, None]))
    if others:
        raise _fail(root / "model_index.json",
                    f"the {name} also has {', '.join(others)} (a latent or conditional pipeline)",
                    f"adaptscope takes {_WHAT}")
    scheduler = root / "scheduler" / "scheduler_config.json"
    if not scheduler.is_file():
        raise _fail(root, "the pipeline has no scheduler/scheduler_config.json, so its noise "
                    "schedule is unknown", "copy the scheduler folder saved with the pipeline "
                    "into it")
    return root / "unet", scheduler


def _unsupported_unet(where: Path, unet_class: Any) -> CheckpointError:
    if unet_class == "UNet2DConditionModel":
        why = ("the UNet is a UNet2DConditionModel, a text- or image-conditioned (latent) model "
               "such as Stable Diffusion")
    else:
        why = f"the UNet is a {unet_class}"
    return _fail(where, why, "only unconditional UNet2DModel models are supported (e.g. a "
                 "DDPMPipeline); give one of those")


def _check_unet_config(config: dict[str, Any], where: Path) -> int:
    """The square image size of a UNet2DModel that adaptscope can sample, or the reason not."""
    unet_class = config.get("_class_name", "UNet2DModel")
    if unet_class != "UNet2DModel":
        raise _unsupported_unet(where, unet_class)
    if config.get("num_class_embeds") is not None or config.get("class_embed_type") is not None:
        raise _fail(where, "the UNet is class-conditional (num_class_embeds / class_embed_type)",
                    "only unconditional UNet2DModel models are supported")
    if config.get("time_embedding_type") == "fourier":
        raise _fail(where, "the UNet has a Fourier time embedding (a score-SDE / VE model, "
                    "timed by noise level, not by DDPM step)",
                    "only DDPM-schedule (epsilon-predicting) models are supported")
    if config.get("in_channels", 3) != 3 or config.get("out_channels", 3) not in (3, 6):
        raise _fail(where, f"the UNet maps {config.get('in_channels', 3)} to "
                    f"{config.get('out_channels', 3)} channels",
                    "adaptscope models RGB images: 3 input channels, 3 output channels (6 with "
                    "a learned variance)")
    size = config.get("sample_size")
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise _fail(where, f"sample_size = {size!r} is not one square image size",
                    "set sample_size in config.json to the image size the model was trained at")
    return size


def _check_schedule(schedule: dict[str, Any], where: Path) -> None:
    if "beta_schedule" not in schedule and schedule.get("trained_betas") is None:
        name = schedule.get("_class_name", "the scheduler")
        raise _fail(where, f"{name} has no DDPM beta schedule (beta_schedule / trained_betas)",
                    "only DDPM-schedule models are supported (DDPMScheduler, DDIMScheduler, ...)")
    prediction = schedule.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise _fail(where, f"prediction_type is {prediction!r}",
                    "adaptscope trains and samples epsilon-predicting models only; give an "
                    "epsilon-prediction model (v_prediction and sample models are not supported)")


def _weights_present(unet_dir: Path) -> None:
    if any((unet_dir / name).is_file() for name in WEIGHT_FILES):
        return
    found = sorted(p.name for p in unet_dir.iterdir()) if unet_dir.is_dir() else []
    raise _fail(unet_dir, f"no weights file ({WEIGHT_FILES[0]} or {WEIGHT_FILES[1]}); found "
                f"{found or 'nothing'}", "copy the weights saved with the model into the "
                "folder (an fp16 variant alone is not loaded: save the model in fp32)")


def load_diffusers_folder(path: str | os.PathLike) -> LoadedDiffusion:
    """A diffusers pipeline or UNet2DModel folder as a `DiffusionModel`, offline, strictly.

    Everything is checked that can be before the weights are read; any failure is one
    `CheckpointError` naming the file and the fix."""
    root = Path(path)
    if not root.is_dir():
        raise _fail(root, "is not a folder" if root.exists() else "does not exist",
                    f"give {_WHAT}")
    if (root / "model_index.json").is_file():
        unet_dir, schedule_file = _pipeline_parts(root, _read_json(root / "model_index.json"))
    elif (root / "config.json").is_file():
        unet_dir = root
        beside = [root / "scheduler_config.json",
                  root.parent / "scheduler" / "scheduler_config.json"]
        schedule_file = next((p for p in beside if p.is_file()), None)
    else:
        raise _fail(root, "holds neither model_index.json (a pipeline) nor config.json (a UNet)",
                    f"give {_WHAT}")
    size = _check_unet_config(_read_json(unet_dir / "config.json"), unet_dir / "config.json")
    schedule = dict(DEFAULT_SCHEDULE) if schedule_file is None else _read_json(schedule_file)
    _check_schedule(schedule, schedule_file or unet_dir)
    _weights_present(unet_dir)

    from diffusers import UNet2DModel

    try:
        unet, info = UNet2DModel.from_pretrained(str(unet_dir), local_files_only=True,
                                                 output_loading_info=True)
    except Exception as err:  # diffusers raises many types for damaged or foreign files
        # Its advice (re-initialise what does not fit) is not adaptscope's: keep the reason.
        reason = str(err).split(" If you want to instead overwrite")[0].replace("load  ", "load ")
        if "expected shape" in reason:
            raise _fail(unet_dir, f"the weights do not match config.json ({reason})",
                        "use the config.json saved with these weights") from err
        raise _fail(unet_dir, f"diffusers cannot load the UNet ({reason})",
                    "replace the folder with one saved by save_pretrained") from err
    problems = [f"{label} {len(keys)} tensors, e.g. {list(keys)[:3]}"
                for label, keys in (("missing", info.get("missing_keys") or []),
                                    ("unexpected", info.get("unexpected_keys") or []),
                                    ("wrong shapes for", info.get("mismatched_keys") or []))
                if keys]
    if problems:
        raise _fail(unet_dir, "the weights do not match config.json: " + "; ".join(problems),
                    "use the config.json saved with these weights")
    try:
        model = DiffusionModel(unet, schedule, size=size, kind="diffusers")
    except CheckpointError as err:
        raise CheckpointError(f"{schedule_file or unet_dir}: {err}") from err
    extra = {"unet_folder": str(unet_dir),
             "schedule_file": None if schedule_file is None else str(schedule_file)}
    return LoadedDiffusion(root, "diffusers", model.eval(), extra)
