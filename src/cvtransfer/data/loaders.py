"""Datasets and data loaders: images or cached features, shuffled, weighted or in order."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, WeightedRandomSampler

from cvtransfer.data.images import DEFAULT_MAX_PIXELS, ImageReadError, load_rgb
from cvtransfer.errors import ConfigError, DataError

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
        try:
            image = load_rgb(path, self.max_pixels)
        except (ImageReadError, OSError) as err:
            raise DataError(f"{path}: {err} (it changed after the dataset was checked?)") from None
        return self.transform(image), label


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
    """Samples each of ``world_size`` processes gets (Lightning's DistributedSampler pads to equal shares)."""
    return math.ceil(num_samples / max(1, world_size))


def drop_last_for(num_samples: int, batch_size: int, world_size: int = 1) -> bool:
    """Drop each rank's incomplete last batch only when the rank has more than one batch of samples."""
    return rank_share(num_samples, world_size) > batch_size


def batches_per_rank(num_samples: int, batch_size: int, world_size: int = 1,
                     drop_last: bool | None = None) -> int:
    """Training batches (optimizer steps without accumulation) each rank runs per epoch."""
    share = rank_share(num_samples, world_size)
    if drop_last is None:
        drop_last = drop_last_for(num_samples, batch_size, world_size)
    return share // batch_size if drop_last else math.ceil(share / batch_size)


def check_training_batches(num_samples: int, batch_size: int, world_size: int = 1,
                           drop_last: bool | None = None) -> None:
    """Refuse a training that would run no optimizer step (and so write an untrained model)."""
    if batches_per_rank(num_samples, batch_size, world_size, drop_last) > 0:
        return
    processes = f" over {world_size} processes" if world_size > 1 else ""
    fewer = " or use fewer --devices" if world_size > 1 else ""
    raise ConfigError(f"{num_samples} training images{processes} and --batch-size {batch_size} give no full "
                      f"batch: lower --batch-size{fewer}")


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
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader; for training shuffled (or class-balanced) with a seeded generator.

    Training drops an incomplete last batch only when each of the ``world_size`` ranks has more than a
    batch (:func:`drop_last_for`): a small dataset still trains.
    """
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if train and balanced:
        weights = class_sample_weights(labels or [], num_classes)
        sampler = WeightedRandomSampler(weights, num_samples=len(weights), replacement=True, generator=generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        generator=generator,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        drop_last=train and drop_last_for(len(dataset), batch_size, world_size),
    )


def for_world_size(loader: DataLoader, world_size: int) -> DataLoader:
    """The training ``loader`` with drop_last decided on each of ``world_size`` ranks' share.

    Raises ConfigError when the ranks would get no batch at all. Lightning later swaps the sampler for
    a distributed one, keeping drop_last and the shuffling.
    """
    size, batch_size = len(loader.dataset), loader.batch_size or 1
    drop_last = drop_last_for(size, batch_size, world_size)
    check_training_batches(size, batch_size, world_size, drop_last)
    if drop_last == loader.drop_last:
        return loader
    return DataLoader(
        loader.dataset,
        batch_size=batch_size,
        sampler=loader.sampler,
        generator=loader.generator,
        num_workers=loader.num_workers,
        persistent_workers=loader.persistent_workers,
        pin_memory=loader.pin_memory,
        drop_last=drop_last,
    )
