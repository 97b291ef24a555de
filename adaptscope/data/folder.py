"""Real image datasets: a folder (searched recursively) or a .zip of image files.

Every image is fully decoded on load, so a truncated or corrupt file stops the run with its name
instead of being skipped or half-read; images are made RGB, resized on the shorter side and
centre-cropped to the model resolution, and returned as float tensors in [-1, 1].
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from adaptscope.errors import DataError
from adaptscope.images import from_uint8

# What PIL reads losslessly enough to measure; the same set for training data and FID's folders.
IMAGE_SUFFIXES = frozenset({".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff",
                            ".webp"})
_FIX_FORMAT = "pass a folder or a .zip that holds PNG, JPEG, WebP, BMP, PPM or TIFF images"


def _hidden(parts: Sequence[str]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _is_zip(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".zip"


def list_images(path: str | Path) -> list[str]:
    """Sorted image names relative to `path` (POSIX separators), hidden files excluded."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"image dataset {root} does not exist; {_FIX_FORMAT}")
    if _is_zip(root):
        try:
            with zipfile.ZipFile(root) as zf:
                names = [
                    n
                    for n in zf.namelist()
                    if not n.endswith("/")
                    and Path(n).suffix.lower() in IMAGE_SUFFIXES
                    and not _hidden(Path(n).parts)
                ]
        except zipfile.BadZipFile as err:
            raise DataError(f"{root} is not a readable zip archive ({err}); re-create it") from err
    elif root.is_dir():
        names = [
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_SUFFIXES
            and not _hidden(p.relative_to(root).parts)
        ]
    else:
        raise DataError(f"{root} is neither a folder nor a .zip archive; {_FIX_FORMAT}")
    if not names:
        raise DataError(f"no images found in {root} (looked for "
                        f"{', '.join(sorted(IMAGE_SUFFIXES))}); {_FIX_FORMAT}")
    return sorted(names)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB version of any PIL mode; transparency is composited onto white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _resize_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.LANCZOS)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def _where(root: Path, name: str) -> str:
    """How messages name an image: its path, or `archive.zip:member` inside a zip."""
    return f"{root}:{name}" if _is_zip(root) else str(root / name)


def _decode(data: bytes, name: str, root: Path) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return ImageOps.exif_transpose(img)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError,
            Image.DecompressionBombError) as err:
        # PIL names the in-memory buffer (<_io.BytesIO object at 0x...>), not the file
        reason = ("not an image format PIL recognises" if isinstance(err, UnidentifiedImageError)
                  else str(err))
        raise DataError(
            f"cannot read image {_where(root, name)}: {reason}; re-export the file or remove it"
        ) from err


class _Reader:
    """Reads raw bytes of named images from a folder or a zip, one open archive per load."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.zip = zipfile.ZipFile(root) if _is_zip(root) else None

    def read(self, name: str) -> bytes:
        try:
            if self.zip is not None:
                return self.zip.read(name)
            return (self.root / name).read_bytes()
        except (OSError, zipfile.BadZipFile, zlib.error) as err:
            raise DataError(f"cannot read {_where(self.root, name)}: {err}; check the file"
                            ) from err

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def _check_files(
    root: Path, files: Sequence[str], available: Sequence[str], listed_in: Path | None = None
) -> list[str]:
    known = set(available)
    wanted = [Path(f).as_posix() for f in files]
    missing = [f for f in wanted if f not in known]
    if missing:
        where = f", listed in {listed_in}," if listed_in is not None else ""
        raise DataError(
            f"image {missing[0]!r}{where} is not in {root} ({len(known)} images there); "
            "give names relative to the dataset root, as `list_images` prints them"
        )
    return wanted


def load_images(
    path: str | Path, size: int, files: Sequence[str] | None = None
) -> torch.Tensor:
    """Load all images of `path` (or the named `files`) as (N, 3, size, size) float32 in [-1, 1]."""
    root = Path(path)
    available = list_images(root)
    names = available if files is None else _check_files(root, files, available)
    if not names:
        raise DataError(f"no images requested from {root}; name at least one file")
    out = torch.empty((len(names), 3, size, size), dtype=torch.float32)
    reader = _Reader(root)
    try:
        for k, name in enumerate(names):
            img = _resize_crop(_to_rgb(_decode(reader.read(name), name, root)), size)
            out[k] = from_uint8(np.array(img, dtype=np.uint8)[None])[0]
    finally:
        reader.close()
    return out


def few_shot_subset(
    path: str | Path, shots: int, seed: int = 0, files: Sequence[str] | None = None
) -> list[str]:
    """Names of the `shots` training images: the explicit `files`, or a seeded draw from the
    sorted listing (the same names for the same folder contents and seed)."""
    root = Path(path)
    available = list_images(root)
    if files is not None:
        chosen = _check_files(root, files, available)
        if len(chosen) != shots:
            raise DataError(
                f"{len(chosen)} shot files were named for {root} but shots={shots}; "
                "name exactly as many files as shots"
            )
        return chosen
    if shots < 1:
        raise DataError(f"shots must be at least 1, got {shots}")
    if len(available) < shots:
        raise DataError(
            f"{root} holds {len(available)} images, fewer than shots={shots}; "
            "add images or lower the number of shots"
        )
    picked = np.random.default_rng(seed).choice(len(available), size=shots, replace=False)
    return [available[i] for i in sorted(picked.tolist())]


def read_shots_file(list_file: str | Path, path: str | Path, shots: int) -> list[str]:
    """The shot names listed in `list_file` (one a line; blank lines and lines starting with
    "#" ignored), checked against the images of `path` and the number of `shots`.

    A relative `list_file` is taken from the working directory, as the dataset path is."""
    source = Path(list_file)
    fix = (f"write the {shots} shot file names there, one a line, relative to {Path(path)}, "
           "or set target.shots_file")
    if not source.is_file():
        raise DataError(f"shots file {source} does not exist: {fix}")
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read shots file {source} ({err}); save it as UTF-8 text with "
                        "one file name a line") from err
    lines = (line.strip() for line in text.splitlines())
    names = [line for line in lines if line and not line.startswith("#")]
    if not names:
        raise DataError(f"shots file {source} lists no file names: {fix}")
    if len(names) != shots:
        raise DataError(
            f"shots file {source} lists {len(names)} file names but target.shots = {shots}; "
            f"list exactly {shots} names there or set target.shots = {len(names)}")
    root = Path(path)
    chosen = _check_files(root, names, list_images(root), listed_in=source)
    repeated = sorted({n for n in chosen if chosen.count(n) > 1})
    if repeated:
        raise DataError(f"shots file {source} lists {repeated[0]!r} more than once; list "
                        f"{shots} different images")
    return chosen
