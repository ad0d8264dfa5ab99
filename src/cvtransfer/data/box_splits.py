"""Detection data for the engine: the run's splits of boxed images, and the dataset a detector reads.

The label formats (COCO, VOC, YOLO) are read by :mod:`cvtransfer.data.box_formats`; here one data set
without split folders is split, seeded, into train / val (/ test), the splits are saved and read back
(splits.json), and each image becomes ``(float (3, H, W) in [0, 1], {"boxes": (N, 4), "labels": (N,)})``
at its own size: torchvision's detectors resize and normalise inside (their ``transform``) and map
their boxes back to the size they were given, so predictions and metrics are in the image's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from cvtransfer.data.boxes import BoxImage
from cvtransfer.data.folders import SPLIT_NAMES, carve_missing
from cvtransfer.data.images import DEFAULT_MAX_PIXELS
from cvtransfer.data.loaders import read_image
from cvtransfer.errors import ConfigError, DataError

Target = dict[str, torch.Tensor]


@dataclass
class DetectionSplits:
    """Boxed images per split and the class names (label i is ``classes[i]``; background is not a class)."""

    classes: list[str]
    train: list[BoxImage]
    val: list[BoxImage]
    test: list[BoxImage] = field(default_factory=list)

    def split(self, name: str) -> list[BoxImage]:
        return getattr(self, name)

    def counts(self, name: str) -> dict[str, int]:
        images = self.split(name)
        return {"images": len(images), "boxes": sum(len(image.labels) for image in images)}

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, **{name: [_image_dict(image) for image in self.split(name)]
                                            for name in SPLIT_NAMES}}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DetectionSplits:
        splits = {name: [_image_from_dict(item) for item in values.get(name, [])] for name in SPLIT_NAMES}
        return cls(classes=list(values["classes"]), **splits)


def _image_dict(image: BoxImage) -> dict[str, Any]:
    return {"image": image.image, "width": image.width, "height": image.height,
            "boxes": image.boxes.tolist(), "labels": image.labels.tolist()}


def _image_from_dict(item: dict[str, Any]) -> BoxImage:
    return BoxImage(str(item["image"]), int(item["width"]), int(item["height"]),
                    np.asarray(item["boxes"], dtype=np.float64).reshape(-1, 4), np.asarray(item["labels"], dtype=np.int64))


def discover_detection_splits(data: str | Path, val_split: float = 0.2, test_split: float = 0.0, seed: int = 0,
                              missing_labels: str = "error", require_train: bool = True,
                              max_pixels: int = DEFAULT_MAX_PIXELS) -> DetectionSplits:
    """The splits of DATA (any of the three formats): its train/val/test folders, else a seeded split of
    the whole set (``val_split``, ``test_split``: fractions of it); val carved from train when missing.
    ``require_train=False`` (evaluation data): a folder of only val/ or test/ is fine; images of more than
    ``max_pixels`` are refused as their headers are read."""
    from cvtransfer.data.box_formats import discover_detection

    root = Path(data)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder: give a folder of images with COCO, Pascal VOC or YOLO labels")
    sets = discover_detection(root, missing_labels, max_pixels)
    classes = next(iter(sets.values())).classes
    found = {name: list(boxset.images) for name, boxset in sets.items()}
    pool = found.pop("all", None) or found.pop("train", [])
    if not pool and require_train:
        raise DataError(f"{root} has no training images: put images with their labels in it (or in {root}/train)")
    splits = DetectionSplits(classes, pool, found.get("val", []), found.get("test", []))
    carve_missing(splits, val_split, test_split if "all" in sets else 0.0, seed, key=lambda image: image.image)
    return splits


def box_transform(augment: str, train: bool) -> v2.Compose:
    """Applied alike to a ``tv_tensors.Image`` and its ``tv_tensors.BoundingBoxes``: flips (light) and colour
    jitter (strong) for training, nothing but the float conversion otherwise. Scale is the detector's
    (its ``transform`` resizes the shorter side to ``--image-size``)."""
    if augment not in ("none", "light", "strong"):
        raise ConfigError(f"--augment must be none, light or strong, not '{augment}'")
    steps: list[v2.Transform] = []
    if train and augment != "none":
        steps.append(v2.RandomHorizontalFlip())
    if train and augment == "strong":
        steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02))
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True)])


class DetectionDataset(Dataset):
    """(image, target) pairs: float32 (3, H, W) in [0, 1] at the image's size, and its boxes (x1, y1, x2, y2
    pixels, float32 (N, 4)) and labels (int64 (N,), the user's 0-based classes)."""

    def __init__(self, images: Sequence[BoxImage], augment: str, train: bool,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.images = list(images)
        self.max_pixels = max_pixels
        self.transform = box_transform(augment, train)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        item = self.images[index]
        image = read_image(item.image, self.max_pixels)
        if (image.width, image.height) != (item.width, item.height):
            raise DataError(f"{item.image} is {image.width}x{image.height} but its labels say "
                            f"{item.width}x{item.height}: correct the label file's image size")
        boxes = tv_tensors.BoundingBoxes(torch.as_tensor(item.boxes, dtype=torch.float32), format="XYXY",
                                         canvas_size=(image.height, image.width))
        x, boxes = self.transform(tv_tensors.Image(v2.functional.pil_to_tensor(image)), boxes)
        return x.as_subclass(torch.Tensor), {"boxes": boxes.as_subclass(torch.Tensor),
                                             "labels": torch.as_tensor(item.labels, dtype=torch.int64)}


def detection_collate(items: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """A batch as the lists torchvision's detectors take (images of different sizes are not stacked)."""
    return [image for image, _ in items], [target for _, target in items]
