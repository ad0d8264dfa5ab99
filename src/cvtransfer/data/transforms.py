"""Preprocessing from the weights' own config, augmentation presets, and batch mixing."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torchvision.transforms import InterpolationMode, v2

from cvtransfer.errors import ConfigError

INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class Preprocessing:
    """What the weights expect: input size, normalisation, resize interpolation and crop."""

    input_size: int
    mean: tuple[float, ...]  # per channel: 3 values for RGB
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 0.875

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        return cls(
            input_size=int(values["input_size"]),
            mean=tuple(float(v) for v in values["mean"]),
            std=tuple(float(v) for v in values["std"]),
            interpolation=str(values.get("interpolation", "bilinear")),
            crop_pct=float(values.get("crop_pct", 0.875)),
        )

    def with_size(self, size: int | None) -> Preprocessing:
        """The same preprocessing at another input size (``--image-size``)."""
        if size is None:
            return self
        return Preprocessing(size, self.mean, self.std, self.interpolation, self.crop_pct)


def _interpolation(pre: Preprocessing) -> InterpolationMode:
    return INTERPOLATIONS.get(pre.interpolation, InterpolationMode.BILINEAR)


def _to_normalised(pre: Preprocessing) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)]


def eval_geometry(pre: Preprocessing) -> v2.Compose:
    """Resize to size/crop_pct and centre-crop: the evaluation recipe's pixels, still uint8."""
    resize = math.floor(pre.input_size / pre.crop_pct)
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(resize, interpolation=_interpolation(pre), antialias=True),
            v2.CenterCrop(pre.input_size),
        ]
    )


def normalise(pre: Preprocessing) -> v2.Compose:
    """uint8 image -> float in [0, 1] -> normalised by the weights' mean and std."""
    return v2.Compose(_to_normalised(pre))


def eval_transform(pre: Preprocessing) -> v2.Compose:
    """Resize to size/crop_pct, centre-crop, normalise: the weights' evaluation recipe.

    Made of :func:`eval_geometry` then :func:`normalise`, so that images kept in memory can hold the
    first part's output once and run only the second per step (``data/memory.py``)."""
    return v2.Compose([*eval_geometry(pre).transforms, *normalise(pre).transforms])


def train_transform(pre: Preprocessing, augment: str) -> v2.Compose:
    """Training transform for the preset ``none``, ``light`` or ``strong``."""
    if augment == "none":
        return eval_transform(pre)
    size, interpolation = pre.input_size, _interpolation(pre)
    if augment == "light":
        steps = [
            v2.ToImage(),
            v2.RandomResizedCrop(size, scale=(0.6, 1.0), interpolation=interpolation, antialias=True),
            v2.RandomHorizontalFlip(),
            *_to_normalised(pre),
        ]
    elif augment == "strong":
        steps = [
            v2.ToImage(),
            v2.RandomResizedCrop(size, scale=(0.25, 1.0), interpolation=interpolation, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.TrivialAugmentWide(interpolation=InterpolationMode.BILINEAR),  # bicubic is PIL-only here
            *_to_normalised(pre),
            v2.RandomErasing(p=0.25),
        ]
    else:
        raise ConfigError(f"--augment must be none, light or strong, not '{augment}'")
    return v2.Compose(steps)


def batch_mixer(mixup: float, cutmix: float, num_classes: int) -> Callable | None:
    """MixUp and/or CutMix on a batch (images, labels) -> (images, soft labels); None if both off."""
    mixers = []
    if mixup > 0:
        mixers.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
    if cutmix > 0:
        mixers.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
