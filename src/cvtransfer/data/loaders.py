"""Datasets and data loaders: images or cached features, shuffled, weighted or in order."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence, Sized
from typing import cast

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset, WeightedRandomSampler

from cvtransfer.data.images import DEFAULT_MAX_PIXELS, ImageReadError, load_rgb
from cvtransfer.errors import DataError

Sample = tuple[str, int]


class ImageDataset(Dataset):
    """(path, label) samples read as RGB images and transformed."""

    def __init__(self, samples: Sequence[Sample], transform: Callable, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(read_image(path, self.max_pixels)), label


def read_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """``path`` as RGB for a dataset: the files were checked when the splits were made, so a failure here
    means one changed since."""
    try:
        return load_rgb(path, max_pixels)
    except (ImageReadError, OSError) as err:
        raise changed_file(path, err) from None


def changed_file(path: str, err: Exception) -> DataError:
    """The error for a file of a dataset that no longer reads as it did when the splits were made."""
    return DataError(f"{path}: {err} (it changed after the dataset was checked?)")


def feature_dataset(features: torch.Tensor, labels: torch.Tensor) -> TensorDataset:
    return TensorDataset(features, labels)


def default_workers(requested: int) -> int:
    """-1 picks from the machine: all but one core up to 8 with a GPU, else half of them."""
    if requested >= 0:
        return requested
    cores = os.cpu_count() or 1
    if torch.cuda.is_available():
        return max(1, min(8, cores - 1))
    return min(4, cores // 2) if cores > 2 else 0


def class_sample_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Per-sample weights making every class equally likely to be drawn."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=num_classes).clamp(min=1).float()
    return (1.0 / counts)[torch.as_tensor(labels)]


def class_loss_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights N / (C * n_c) for the cross-entropy."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=num_classes).clamp(min=1).float()
    return counts.sum() / (num_classes * counts)


def rank_share(num_samples: int, world_size: int = 1) -> int:
    """Samples each of ``world_size`` processes gets: Lightning's DistributedSampler pads the shares to
    equal size by repeating samples, so every process gets at least one of a non-empty dataset."""
    return math.ceil(num_samples / max(1, world_size))


def drop_last_for(num_samples: int, batch_size: int, world_size: int = 1) -> bool:
    """Drop each rank's incomplete last batch only when the rank has more than one batch of samples
    (so every rank keeps at least one batch: a small dataset still trains)."""
    return rank_share(num_samples, world_size) > batch_size


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    num_workers: int = 0,
    labels: Sequence[int] | None = None,
    num_classes: int = 0,
    balanced: bool = False,
) -> DataLoader:
    """A DataLoader; for training shuffled (or class-balanced) with a seeded generator, dropping an
    incomplete last batch only when there is more than one batch (:func:`drop_last_for`; several
    processes: :func:`for_world_size`)."""
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if train and balanced:
        weights = class_sample_weights(labels or [], num_classes)
        sampler = WeightedRandomSampler(
            weights,  # type: ignore[arg-type]  # typed Sequence[float]; a Tensor is what it turns them into
            num_samples=len(weights), replacement=True, generator=generator,
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        generator=generator,
        num_workers=num_workers,
        # a training loader's workers start afresh each epoch, seeded from its generator: what an exact resume
        # restores (persistent workers would carry their random state from epoch to epoch instead)
        persistent_workers=num_workers > 0 and not train,
        pin_memory=torch.cuda.is_available(),
        drop_last=train and drop_last_for(len(cast(Sized, dataset)), batch_size),
    )


def for_world_size(loader: DataLoader, world_size: int) -> DataLoader:
    """The training ``loader`` of :func:`make_loader` with drop_last decided on each of ``world_size``
    ranks' share (Lightning then swaps in a distributed sampler, keeping drop_last)."""
    if loader.batch_size is None:  # batches drawn by a batch sampler (episodes): each is whole as it is
        return loader
    drop_last = drop_last_for(len(cast(Sized, loader.dataset)), loader.batch_size, world_size)
    if drop_last == loader.drop_last:
        return loader
    kept = ("batch_size", "sampler", "generator", "num_workers", "persistent_workers", "pin_memory", "collate_fn")
    return DataLoader(loader.dataset, drop_last=drop_last, **{name: getattr(loader, name) for name in kept})
