"""FID feature extractors: one calling convention for every FID backbone.

An extractor maps a batch of images holding 8-bit values as floats in [0, 255], shape
(N, 3, S, S), to features (N, D). `input_size` is the side that clean-fid's "clean" resizer (PIL
bicubic on float images) brings every image to before the call; None means the extractor takes
any size. `name` identifies backbone and weights, so cached real-set statistics are never reused
across backbones.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F


class FeatureExtractor:
    """Callable (N, 3, S, S) floats in [0, 255] -> (N, D) features."""

    name: str = "custom"
    input_size: int | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class FunctionExtractor(FeatureExtractor):
    """Wraps any function with the extractor convention (custom backbones, tests)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str,
                 input_size: int | None = 299):
        self.fn = fn
        self.name = name
        self.input_size = input_size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.fn(x)


class InceptionExtractor(FeatureExtractor):
    """clean-fid's Inception-v3 (pool3, 2048-D) in its "clean" mode."""

    input_size = 299

    def __init__(self, weights_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu"):
        from adaptscope.metrics.backbones import build_inception

        self.device = torch.device(device)
        self.model = build_inception(weights_dir, self.device)
        self.name = "inception-2015-12-05/clean-fid"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(x.to(self.device)).float().cpu()


class PytorchFIDExtractor(FeatureExtractor):
    """pytorch-fid's Inception-v3 (pool3, 2048-D), as CDC and DCL computed FID on image folders.

    pytorch-fid reads each image with `ToTensor()` (pytorch_fid/fid_score.py:121), i.e. x / 255,
    and its model resizes to 299 itself, bilinear with align_corners=False and no antialiasing
    (pytorch_fid/inception.py:146-150), then maps [0, 1] to [-1, 1] (line 153). So images reach
    it at their own size: `input_size = None`.
    """

    name = "inception-2015-12-05/pytorch-fid"
    input_size = None

    def __init__(self, weights_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu"):
        from adaptscope.metrics.backbones import build_pytorch_fid_inception

        self.device = torch.device(device)
        self.model = build_pytorch_fid_inception(weights_dir, self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(x.to(self.device) / 255.0)[0].flatten(1).float().cpu()


class TorchvisionInceptionExtractor(FeatureExtractor):
    """torchvision's ImageNet Inception-v3 pool features (2048-D), as AdAM and RICK compute FID.

    AdAM (github.com/yunqing-me/AdAM @ 6428e99; RICK's copies are identical) feeds images in
    [-1, 1]: real ones through `ToTensor()` and `Normalize((0.5,) * 3, (0.5,) * 3)`
    (AdAM_main_adaptation.py:646-655, 899-906), generated ones as the generator returns them
    (gan_training/eval.py:34-51). `gan_training/metrics/inception.py` then upsamples to 299 with
    `F.upsample(mode='bilinear')` (line 90: align_corners=False, no antialiasing) and applies
    x * std/0.5 + (mean - 0.5)/0.5 per channel (lines 92-96), which is torchvision's
    `transform_input`, on those [-1, 1] values; features are the final average pool (lines
    70-78). So images reach it at their own size: `input_size = None`.
    """

    name = "inception-v3-google-0cc3c7bd/adam"
    input_size = None

    def __init__(self, weights_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu"):
        from adaptscope.metrics.backbones import build_torchvision_inception

        self.device = torch.device(device)
        self.model = build_torchvision_inception(weights_dir, self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = (x.to(self.device) / 255.0 - 0.5) / 0.5  # ToTensor, Normalize(0.5, 0.5)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            return self.model(x).float().cpu()


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def dgm_eval_transform(img: torch.Tensor, size: int = 224) -> torch.Tensor:
    """dgm-eval's DINOv2 input (dgm_eval/models/dinov2.py:46-59, default, no --clean_resize) of one
    (3, H, W) image of 8-bit values: torchvision's `Resize((size, size), BICUBIC)` on the PIL
    image, i.e. PIL's 8-bit bicubic, then `ToTensor()` and ImageNet `Normalize`."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    pixels = img.detach().cpu().round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    pil = TF.resize(Image.fromarray(pixels), [size, size], InterpolationMode.BICUBIC)
    return TF.normalize(TF.to_tensor(pil), list(IMAGENET_MEAN), list(IMAGENET_STD))


class DINOv2Extractor(FeatureExtractor):
    """FD-DINOv2 features (Stein et al. 2023; github.com/layer6ai-labs/dgm-eval @ 74c79f7): the
    CLS token after the final norm of DINOv2 ViT-B/14 (768-D) on 224x224 inputs.

    dgm-eval resizes the PIL image with PIL's 8-bit bicubic to 224 (`dgm_eval_transform`), so the
    extractor resizes itself (`input_size = None`). With `--clean_resize` dgm-eval uses instead
    PIL bicubic on float channels without rounding (dgm_eval/resizer.py:5-14), which is exactly
    clean-fid's resizer, i.e. `input_size = 224` here. The two resizes differ by about 0.3 8-bit
    levels per pixel on average and about 1 at most on smooth images, but by up to ~20 levels at
    high-contrast edges, where PIL's 8-bit resize clips between its horizontal and vertical passes.
    """

    name = "dinov2-vitb14-lvd142m/dgm-eval"
    input_size = None
    side = 224

    def __init__(self, weights_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu"):
        from adaptscope.metrics.backbones import build_dinov2_vitb14

        self.device = torch.device(device)
        self.model = build_dinov2_vitb14(weights_dir, self.device, img_size=self.side)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            batch = torch.stack([dgm_eval_transform(img, self.side) for img in x])
            return self.model(batch.to(self.device)).float().cpu()


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def cmmd_transform(img: torch.Tensor, size: int = 336) -> torch.Tensor:
    """CMMD's CLIP input (3, size, size) of one (3, H, W) image of 8-bit values.

    As google-research/cmmd reads images (io_util.py @ 1963839: `_center_crop_and_resize`
    :38-46 called by `_read_image` :49-57 with the model's side, :122): a centre crop to the
    largest square, PIL's 8-bit bicubic (antialiased) resize to `size`, float32, then / 255
    (:139) and CLIP's mean/std (embedding.py @ 8d8a4f1 :33, scenic clip/model.py:74-75,
    328-329). Its own resize (embedding.py:29 `jax.image.resize` bicubic; torch bicubic in
    the PyTorch port, sayakpaul/cmmd-pytorch embedding.py:26-30, 57) then maps 336 to 336,
    the identity, so it is left out.
    """
    from PIL import Image
    from torchvision.transforms import functional as TF

    pixels = img.detach().cpu().round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    pil = Image.fromarray(pixels)
    w, h = pil.size
    side = min(w, h)
    top, left = (h - side) // 2, (w - side) // 2
    pil = pil.crop((left, top, left + side, top + side))
    pil = pil.resize((size, size), resample=Image.BICUBIC)
    return TF.normalize(TF.to_tensor(pil), list(CLIP_MEAN), list(CLIP_STD))


class CLIPExtractor(FeatureExtractor):
    """CMMD's embedding (Jayasumana et al. 2024): CLIP ViT-L/14 at 336 px, the projected image
    embedding (768-D) divided by its norm, as google-research/cmmd's `ClipEmbeddingModel`
    (embedding.py @ 8d8a4f1 :23 'vit_l14_336px', :58 the model applied with scenic CLIP's
    default `normalize=True`, scenic clip/layers.py:449-455, 465-473; the PyTorch port loads
    transformers' `CLIPVisionModelWithProjection` of openai/clip-vit-large-patch14-336 and
    divides `image_embeds` by its norm, sayakpaul/cmmd-pytorch embedding.py:22, 39, 69-70).
    The reference reads OpenAI's original file (scenic clip/model.py `CHECKPOINTS_TORCH`), of
    which the Hugging Face folder is a conversion [S].

    The extractor resizes itself (`cmmd_transform`, PIL bicubic to the model's side), so
    `input_size = None`. `name` carries a digest of the model folder's files, so cached real
    embeddings are never reused across other weights.
    """

    input_size = None

    def __init__(self, weights_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu"):
        from adaptscope.metrics.backbones import build_clip_vision

        self.device = torch.device(device)
        self.model = build_clip_vision(weights_dir, self.device)
        config = self.model.config
        self.side = int(config.image_size)
        self.name = (f"clip-{self.side}px-{config.projection_dim}d-"
                     f"{_folder_digest(self.model.name_or_path)}/cmmd")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            batch = torch.stack([cmmd_transform(img, self.side) for img in x])
            emb = self.model(pixel_values=batch.to(self.device)).image_embeds.float()
            return (emb / torch.linalg.norm(emb, dim=-1, keepdim=True)).cpu()


def _folder_digest(folder: str | os.PathLike) -> str:
    """Short digest of a model folder's config and weights: config.json's bytes, each weight
    file's name, size and first and last MiB (not the whole 1.7 GB): the same for the same
    files on any machine, and all but surely different for other weights, a fine-tuned copy of
    the same size included."""
    chunk = 2**20
    digest = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        if path.name == "config.json":
            digest.update(path.read_bytes())
        elif path.suffix in (".safetensors", ".bin") and path.is_file():
            size = path.stat().st_size
            digest.update(f"{path.name}\0{size}\0".encode())
            with open(path, "rb") as f:
                digest.update(f.read(chunk))
                f.seek(max(0, size - chunk))
                digest.update(f.read(chunk))
    return digest.hexdigest()[:8]
