"""Images with a class per pixel (``--task segmentation``): pairs found and checked, masks read, joint transforms.

Three layouts are accepted:
- ``DATA_DIR/images/`` + ``DATA_DIR/masks/``, paired by file stem (any extension), split automatically (seeded);
- ``DATA_DIR/train/{images,masks}`` with optional ``val/`` (or ``valid/``, ``validation/``) and ``test/``;
- a CSV file with columns ``image,mask`` and optionally ``split``; relative paths are relative to its folder.

Classes come from ``--classes-file``, else ``classes.txt`` next to the data (one a line, ``name`` or
``name R G B``; a coloured line named ``ignore`` or ``void`` marks unlabelled pixels and is no class),
else ``class_0..class_K`` for the largest mask value K. Single-channel masks (L, P, I;16...) hold class
indices; RGB(A) masks hold the classes' colours (or, without colours, grey levels read as indices).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from cvtransfer.data.folders import SPLIT_NAMES, VAL_ALIASES, _read_text, carve_missing
from cvtransfer.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    _open_checked,
    is_image_file,
    list_files,
)
from cvtransfer.data.loaders import read_image
from cvtransfer.data.transforms import Preprocessing
from cvtransfer.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SegmentationSample = tuple[str, str]
Colour = tuple[int, int, int]
IGNORE_NAMES = ("ignore", "void")
INDEX_MODES = frozenset({"1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N", "LA", "PA"})
COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBX"})
ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
SCALE_RANGE = (0.5, 2.0)  # training: the shorter side is image_size times this much


@dataclass
class SegmentationSplits:
    """Image and mask pairs per split, the class names and colours, and the mask value of unlabelled pixels.

    ``ignore_colours``: colours of a colour mask read as ``ignore_index`` (classes.txt lines ``ignore R G B``)."""

    classes: list[str]
    train: list[SegmentationSample]
    val: list[SegmentationSample]
    test: list[SegmentationSample] = field(default_factory=list)
    ignore_index: int = 255
    palette: list[Colour] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignore_colours: list[Colour] = field(default_factory=list)

    def split(self, name: str) -> list[SegmentationSample]:
        return getattr(self, name)

    def counts(self, name: str) -> dict[str, int]:
        return {"images": len(self.split(name))}

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, **{name: [list(pair) for pair in self.split(name)] for name in SPLIT_NAMES},
                "ignore_index": self.ignore_index,
                "palette": None if self.palette is None else [list(c) for c in self.palette],
                "ignore_colours": [list(c) for c in self.ignore_colours], "skipped": [list(s) for s in self.skipped]}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SegmentationSplits:
        splits = {name: [(str(i), str(m)) for i, m in values.get(name, [])] for name in SPLIT_NAMES}
        palette = values.get("palette")
        return cls(classes=list(values["classes"]), ignore_index=int(values.get("ignore_index", 255)),
                   palette=None if palette is None else [_colour(c) for c in palette],
                   ignore_colours=[_colour(c) for c in values.get("ignore_colours", [])],
                   skipped=[(p, reason) for p, reason in values.get("skipped", [])], **splits)


def _colour(values: Sequence[int]) -> Colour:
    return int(values[0]), int(values[1]), int(values[2])


def discover_segmentation(data: str | Path, val_split: float = 0.2, test_split: float = 0.0, seed: int = 0,
                          ignore_index: int = 255, classes_file: str | Path | None = None,
                          max_pixels: int = DEFAULT_MAX_PIXELS) -> SegmentationSplits:
    """Pair images and masks in any accepted layout, read the classes, check every pair, and split.

    Errors (DataError): an image without a mask, a mask of another size than its image, a mask value that
    is no class nor ``ignore_index``, an unreadable image or mask, no images. A mask without an image is
    skipped (listed in ``skipped``, with a warning): mismatched names already fail on the images left
    without a mask. Images are not decoded here (sizes from their headers); each mask is read once.
    """
    root = Path(data)
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    skipped: list[tuple[str, str]] = []
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"data path {root} is a file but not a .csv (expected image,mask rows)")
        listed = _read_csv(root)
    else:
        listed = _read_layout(root, skipped)
    pairs = [pair for name in SPLIT_NAMES for pair in listed.get(name, [])]
    if not pairs:
        raise DataError(f"{root} lists no image with a mask: give images/ + masks/, train/{{images,masks}}/ or an "
                        "image,mask CSV")
    default_file = (root.parent if root.is_file() else root) / "classes.txt"
    names, palette, ignore_colours = read_classes(Path(classes_file) if classes_file else default_file,
                                                  required=bool(classes_file))
    check = partial(_check_pair, palette=palette, ignore_colours=ignore_colours, ignore_index=ignore_index,
                    max_pixels=max_pixels)
    values = dict(zip((mask for _, mask in pairs), _map(check, pairs)))
    classes = names or _classes_from_values(values, ignore_index, root)
    _check_values(values, classes, ignore_index, root)
    if skipped:
        log.warning("skipped %d file(s) (not images, or masks without an image): %s ...", len(skipped), skipped[0][0])
    splits = SegmentationSplits(classes, listed.get("train", []), listed.get("val", []), listed.get("test", []),
                                ignore_index, palette or _mode_palette(pairs[0][1], len(classes)), skipped,
                                ignore_colours)
    carve_missing(splits, val_split, test_split, seed)
    return splits


def _read_layout(root: Path, skipped: list[tuple[str, str]]) -> dict[str, list[SegmentationSample]]:
    if not (root / "train").is_dir():
        return {"train": _pair_folder(root, skipped)}
    listed = {"train": _pair_folder(root / "train", skipped)}
    val = next((root / name for name in VAL_ALIASES if (root / name).is_dir()), None)
    if val is not None:
        listed["val"] = _pair_folder(val, skipped)
    if (root / "test").is_dir():
        listed["test"] = _pair_folder(root / "test", skipped)
    return listed


def _pair_folder(folder: Path, skipped: list[tuple[str, str]]) -> list[SegmentationSample]:
    """(image, mask) pairs of ``folder/images`` and ``folder/masks`` matched by path without extension."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    for needed in (images_dir, masks_dir):
        if not needed.is_dir():
            raise DataError(f"{folder} has no {needed.name}/ folder: put the images in {images_dir} and their masks "
                            f"(same file names, .png) in {masks_dir}")
    images, masks = _by_stem(images_dir, skipped), _by_stem(masks_dir, skipped)
    orphans = sorted(set(masks) - set(images))
    for key, image in sorted(images.items()):
        if key not in masks:
            hint = f"; {len(orphans)} mask(s) have no image, e.g. {masks[orphans[0]].name}" if orphans else ""
            raise DataError(f"image {image} has no mask in {masks_dir} (paired by file stem: {key}.png){hint}: add "
                            "it, rename the masks to their images' stems, or remove the image")
    skipped += [(str(masks[key]), f"mask without an image in {images_dir}") for key in orphans]
    return [(str(images[key]), str(masks[key])) for key in sorted(images)]


def _by_stem(folder: Path, skipped: list[tuple[str, str]]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in list_files(folder):
        if not is_image_file(path):
            skipped.append((str(path), f"not an image file extension ({path.suffix or 'none'})"))
            continue
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in found:
            raise DataError(f"{path} and {found[key].name} in {folder} have the same stem: keep one (images and "
                            "masks are paired by stem)")
        found[key] = path
    return found


def _read_csv(path: Path) -> dict[str, list[SegmentationSample]]:
    """split -> pairs of an ``image,mask[,split]`` CSV (header names in any case)."""
    rows = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    columns = {name.strip().lower(): name for name in rows.fieldnames or [] if name}
    if not {"image", "mask"} <= set(columns):
        raise DataError(f"{path} must have a header with columns image,mask (and optionally split), "
                        f"not {','.join(rows.fieldnames or []) or 'an empty first line'}")
    listed: dict[str, list[SegmentationSample]] = {}
    seen: dict[str, str] = {}
    for row_number, row in enumerate(rows, start=2):
        if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
            continue  # a blank line
        image, mask = ((row.get(columns[key]) or "").strip() for key in ("image", "mask"))
        if not image or not mask:
            raise DataError(f"{path} line {row_number}: no {'image' if not image else 'mask'}: give every row both")
        split = (row.get(columns.get("split", "")) or "train").strip().lower()
        split = "val" if split in VAL_ALIASES else split
        if split not in SPLIT_NAMES:
            raise DataError(f"{path} line {row_number}: split must be train, val or test, not '{split}'")
        image_path, mask_path = (Path(p) if Path(p).is_absolute() else path.parent / p for p in (image, mask))
        key = os.path.realpath(image_path)
        if seen.get(key, split) != split:
            raise DataError(f"{path} line {row_number}: {image} is listed in the {seen[key]} and {split} splits "
                            "(leakage): list each image once")
        if key not in seen:
            seen[key] = split
            listed.setdefault(split, []).append((str(image_path), str(mask_path)))
    return listed


def read_classes(path: Path, required: bool = False) -> tuple[list[str] | None, list[Colour] | None, list[Colour]]:
    """(names, their colours or None, ignore colours) of a classes file; (None, None, []) if it is absent."""
    if not path.is_file():
        if required:
            raise DataError(f"classes file {path} does not exist: give an existing file to --classes-file")
        return None, None, []
    names: list[str] = []
    colours: list[Colour] = []
    ignored: list[Colour] = []
    coloured: bool | None = None
    for number, raw in enumerate(_read_text(path).splitlines(), start=1):
        line, parts = raw.strip(), raw.split()
        if not line or line.startswith("#"):
            continue
        has_colour = len(parts) >= 4 and all(part.isdecimal() for part in parts[-3:])
        if coloured is not None and has_colour != coloured:
            raise DataError(f"{path} line {number}: give a colour ('name R G B') on every line or on none")
        coloured, name = has_colour, " ".join(parts[:-3]) if has_colour else line
        colour = _colour([int(part) for part in parts[-3:]]) if has_colour else (0, 0, 0)
        if max(colour) > 255:
            raise DataError(f"{path} line {number}: colour values must be 0..255, not {' '.join(parts[-3:])}")
        if has_colour and colour in colours + ignored:
            raise DataError(f"{path} line {number}: colour {' '.join(parts[-3:])} is listed twice: give each its own")
        if has_colour and name.lower() in IGNORE_NAMES:
            ignored.append(colour)
        elif name in names:
            raise DataError(f"{path} line {number}: class '{name}' is listed twice: list each class once")
        else:
            names.append(name)
            colours.append(colour)
    if not names:
        raise DataError(f"{path} lists no classes: write one class a line, 'name' or 'name R G B'")
    return names, colours if coloured else None, ignored


def read_mask(path: str | Path, palette: Sequence[Colour] | None = None, ignore_index: int = 255,
              ignore_colours: Sequence[Colour] = (), max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W) int64 class indices of a mask: single-channel masks hold them; RGB(A) masks are mapped through
    ``palette`` (class i's colour at i) and ``ignore_colours`` (to ``ignore_index``)."""
    try:
        with _open_checked(path, max_pixels) as image:
            if image.mode in INDEX_MODES:
                array = np.asarray(image)
                return (array[..., 0] if array.ndim == 3 else array).astype(np.int64)
            if image.mode not in COLOUR_MODES:
                raise DataError(f"mask {path} has the image mode {image.mode}: save masks as single-channel PNGs of "
                                "class indices (or RGB colours listed in classes.txt)")
            rgb = np.asarray(image.convert("RGB"))
    except ImageReadError as err:
        raise DataError(f"mask {path}: {err}: replace or remove it") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"mask {path}: cannot decode: {err}: replace or remove it") from None
    return _colours_to_indices(rgb, str(path), palette, ignore_index, ignore_colours)


def _colours_to_indices(rgb: np.ndarray, path: str, palette: Sequence[Colour] | None, ignore_index: int,
                        ignore_colours: Sequence[Colour]) -> np.ndarray:
    if not palette:
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return rgb[..., 0].astype(np.int64)  # grey levels saved as RGB: indices
        raise DataError(f"mask {path} is an RGB colour mask: list each class's colour in classes.txt ('name R G B' "
                        "a line) or --classes-file")
    wide = rgb.astype(np.int64)
    codes = (wide[..., 0] << 16) | (wide[..., 1] << 8) | wide[..., 2]
    known = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(palette)}
    known |= {(r << 16) | (g << 8) | b: ignore_index for r, g, b in ignore_colours}
    keys = np.array(sorted(known), dtype=np.int64)
    where = np.searchsorted(keys, codes).clip(max=len(keys) - 1)
    unknown = keys[where] != codes
    if unknown.any():
        y, x = (int(v) for v in np.argwhere(unknown)[0])
        r, g, b = (int(v) for v in rgb[y, x])
        raise DataError(f"mask {path} has the colour ({r}, {g}, {b}) at x={x}, y={y}, which no line of the classes "
                        f"file gives: add it as a class ('name {r} {g} {b}') or as unlabelled ('ignore {r} {g} {b}')")
    return np.array([known[int(k)] for k in keys], dtype=np.int64)[where]


def _check_pair(pair: SegmentationSample, palette: list[Colour] | None, ignore_colours: list[Colour],
                ignore_index: int, max_pixels: int) -> np.ndarray:
    """The values of the pair's mask, after checking that both read and have one size."""
    image, mask = pair
    for path in pair:
        if not Path(path).is_file():
            raise DataError(f"{'image' if path == image else 'mask'} {path} does not exist: fix the path or remove it")
    try:
        with _open_checked(image, max_pixels) as opened:  # the header only: EXIF-rotated images load turned
            width, height = opened.size
            if opened.getexif().get(0x0112, 1) in ROTATED:
                width, height = height, width
    except ImageReadError as err:
        raise DataError(f"image {image}: {err}: replace or remove it") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"image {image}: cannot read its header: {err}: replace or remove it") from None
    array = read_mask(mask, palette, ignore_index, ignore_colours, max_pixels)
    if array.shape != (height, width):
        raise DataError(f"mask {mask} is {array.shape[1]}x{array.shape[0]} but its image {image} is {width}x{height}: "
                        "give every mask its image's size")
    if array.min() < 0 or array.max() > 1 << 20:
        return np.unique(array)
    return np.flatnonzero(np.bincount(array.ravel()))


def _map(function: Callable[[Any], Any], items: Sequence[Any], workers: int = 8) -> list[Any]:
    """``function`` over ``items``, in threads when there are many (PIL decodes without the GIL)."""
    if len(items) < 64:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, items, chunksize=16))


def _classes_from_values(values: dict[str, np.ndarray], ignore_index: int, root: Path) -> list[str]:
    labelled = [int(v.max()) for v in (v[v != ignore_index] for v in values.values()) if v.size]
    if not labelled:
        raise DataError(f"every mask pixel of {root} is --ignore-index {ignore_index}: nothing to learn; check the "
                        "masks or --ignore-index")
    return [f"class_{i}" for i in range(max(labelled) + 1)]


def _check_values(values: dict[str, np.ndarray], classes: list[str], ignore_index: int, root: Path) -> None:
    count = len(classes)
    for mask, found in values.items():
        bad = found[((found < 0) | (found >= count)) & (found != ignore_index)]
        if bad.size:
            raise DataError(f"mask {mask} has the value {int(bad[0])}, but there are {count} classes (0..{count - 1}) "
                            f"and --ignore-index is {ignore_index}: fix the mask, add the class to classes.txt, or "
                            f"set --ignore-index {int(bad[0])} if it marks unlabelled pixels")
    if count < 2:
        raise DataError(f"the masks of {root} hold a single class ({classes[0]}): at least 2 are needed (masks of 0 "
                        f"and {ignore_index}? --ignore-index is {ignore_index}: save the objects as 1)")
    present = set(np.concatenate(list(values.values())).tolist())
    absent = [name for i, name in enumerate(classes) if i not in present]
    if absent:
        log.warning("%d of %d classes appear in no mask (%s...): check classes.txt and --ignore-index",
                    len(absent), count, absent[0])


def _mode_palette(mask: str, count: int) -> list[Colour] | None:
    """The classes' colours from a palette-mode mask's own palette (VOC style), when it has ``count`` distinct."""
    with Image.open(mask) as image:
        values = image.getpalette() if image.mode == "P" else None
    if not values or len(values) < 3 * count:
        return None
    colours = [_colour(values[i:i + 3]) for i in range(0, 3 * count, 3)]
    return colours if len(set(colours)) == count else None


def joint_transform(pre: Preprocessing, image_size: int, augment: str, train: bool,
                    ignore_index: int = 255) -> v2.Compose:
    """Geometry applied alike to a ``tv_tensors.Image`` and its ``tv_tensors.Mask`` (the mask always resized
    nearest, the image bilinear), then the image normalised. Train: random scale, square crop, flip."""
    if augment not in ("none", "light", "strong"):
        raise ConfigError(f"--augment must be none, light or strong, not '{augment}'")
    normalise = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)]
    if not train:
        return v2.Compose([v2.Resize(image_size, antialias=True), *normalise])
    low, high = (round(image_size * scale) for scale in SCALE_RANGE)
    steps: list[v2.Transform] = [
        v2.RandomResize(max(1, low), high + 1, antialias=True) if augment != "none"
        else v2.Resize(image_size, antialias=True),
        v2.RandomCrop(image_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}),
    ]
    if augment != "none":
        steps.append(v2.RandomHorizontalFlip())
    if augment == "strong":
        steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02))
    return v2.Compose([*steps, *normalise])


class SegmentationDataset(Dataset):
    """(image, mask) pairs as (normalised float32 (3, H, W), int64 (H, W)): square crops of ``image_size``
    for training, the whole image with its shorter side ``image_size`` otherwise."""

    def __init__(self, samples: Sequence[SegmentationSample], preprocessing: Preprocessing, image_size: int,
                 augment: str, train: bool, palette: Sequence[Colour] | None = None, ignore_index: int = 255,
                 max_pixels: int = DEFAULT_MAX_PIXELS, ignore_colours: Sequence[Colour] = ()) -> None:
        self.samples = list(samples)
        self.palette, self.ignore_index, self.ignore_colours = palette, ignore_index, ignore_colours
        self.max_pixels = max_pixels
        self.transform = joint_transform(preprocessing, image_size, augment, train, ignore_index)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.samples[index]
        image = read_image(image_path, self.max_pixels)
        mask = read_mask(mask_path, self.palette, self.ignore_index, self.ignore_colours, self.max_pixels)
        if mask.shape != (image.height, image.width):
            raise DataError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
                            f"{image.width}x{image.height} (it changed after the dataset was checked?)")
        x, y = self.transform(tv_tensors.Image(v2.functional.pil_to_tensor(image)),
                              tv_tensors.Mask(torch.from_numpy(mask)))
        return x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)


def pad_to_stride(x: torch.Tensor, stride: int, value: float = 0) -> tuple[torch.Tensor, tuple[int, int]]:
    """``x`` padded with ``value`` at the bottom and right to a multiple of ``stride``, and its (h, w) before."""
    height, width = x.shape[-2:]
    padding = (0, -width % stride, 0, -height % stride)
    return (F.pad(x, padding, value=value) if any(padding) else x), (height, width)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The top-left ``size`` (h, w) of ``x``'s last two dimensions: undoes :func:`pad_to_stride`."""
    return x[..., : size[0], : size[1]]


def pad_collate(stride: int = 32, ignore_index: int = 255) -> Callable[[Sequence[tuple[torch.Tensor, torch.Tensor]]],
                                                                       tuple[torch.Tensor, torch.Tensor]]:
    """A DataLoader collate_fn (picklable): images padded with 0 and masks with ``ignore_index`` at the
    bottom and right to the batch's largest size rounded up to ``stride``, stacked."""
    return partial(_pad_batch, stride=stride, ignore_index=ignore_index)


def _pad_batch(items: Sequence[tuple[torch.Tensor, torch.Tensor]], stride: int,
               ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    height = -(-max(image.shape[-2] for image, _ in items) // stride) * stride
    width = -(-max(image.shape[-1] for image, _ in items) // stride) * stride
    first = items[0][0]
    images = first.new_zeros((len(items), first.shape[0], height, width))
    masks = torch.full((len(items), height, width), ignore_index, dtype=torch.int64)
    for i, (image, mask) in enumerate(items):
        images[i, :, : image.shape[-2], : image.shape[-1]] = image
        masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
    return images, masks
