"""Robust image loading: any PIL mode to 8-bit RGB, EXIF orientation applied, bombs refused."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default limit


class ImageReadError(Exception):
    """An image that cannot be used; the message says why."""


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``path`` as an 8-bit RGB image with its EXIF orientation applied."""
    image = _open_checked(path, max_pixels)
    try:
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"cannot decode: {err}") from None


def image_size(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of ``path`` read from its header: no pixel is decoded."""
    with _open_checked(path, max_pixels) as image:
        return image.size


def _open_checked(path: str | Path, max_pixels: int) -> Image.Image:
    if max_pixels > (Image.MAX_IMAGE_PIXELS or 0):
        # PIL refuses images over twice its own limit; let a user-raised limit through.
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageReadError(f"refused as a decompression bomb (over {max_pixels} pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"not a readable image: {err}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageReadError(
            f"refused as a decompression bomb ({width}x{height} > {max_pixels} pixels; raise --max-image-pixels)"
        )
    if width == 0 or height == 0:
        raise ImageReadError("image has no pixels")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB.

    16-bit and float images are contrast-stretched per image to 8 bits (their raw range differs
    between scanners); transparent images are composited over white.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_stretch_to_uint8(np.asarray(image))).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    image.load()
    return image


def _stretch_to_uint8(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float64)
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((array - low) * (255.0 / (high - low))).astype(np.uint8)


def check_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """None when ``path`` decodes as an image, else the reason it cannot be used."""
    if not is_image_file(path):
        return f"not an image file extension ({Path(path).suffix or 'none'})"
    if not Path(path).exists():
        return "does not exist"
    if not Path(path).is_file():  # a FIFO, socket or device would block the reader for ever
        return "not a regular file"
    try:
        image = _open_checked(path, max_pixels)
        image.draft("RGB", (64, 64))  # JPEG decodes at reduced size: a full check, faster
        image.load()
    except ImageReadError as err:
        return str(err)
    except (OSError, ValueError, SyntaxError) as err:
        return f"cannot decode: {err}"
    return None


def check_images(paths: Sequence[str], max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 8) -> list[str | None]:
    """Reasons (or None) for each path, checked in parallel threads (PIL decodes without the GIL)."""
    if len(paths) < 64:
        return [check_image(p, max_pixels) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: check_image(p, max_pixels), paths, chunksize=32))


def split_usable(paths: Sequence[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[str], list[tuple[str, str]]]:
    """(paths that load, [(path, reason)] for the others), by :func:`check_images`."""
    reasons = check_images(paths, max_pixels)
    usable = [path for path, reason in zip(paths, reasons) if reason is None]
    return usable, [(path, reason) for path, reason in zip(paths, reasons) if reason is not None]


def list_files(folder: Path) -> Iterable[Path]:
    """Every visible file under ``folder``, recursively, in sorted order."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            yield path
