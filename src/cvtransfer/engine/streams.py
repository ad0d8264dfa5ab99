"""Batch streams: what one training step sees, and what validation reads.

- :func:`labelled_stream`: batches of labelled images (``fit``), or of their cached backbone
  features when the strategy trains only the head (linear probes);
- :func:`segmentation_stream`: batches of image crops and their masks (``--task segmentation``);
- :func:`detection_stream`: lists of images and their boxes (``--task detection``);
- :func:`episodic_stream`: one few-shot episode per batch (``--task fewshot``);
- :func:`paired_stream`: a source batch and an unlabelled target batch per step (``adapt``),
  ``iters_per_epoch`` steps per epoch, cycling through the smaller domain.

Each returns a :class:`Stream`: the training loader and the validation loaders in the order the
module reads them (labelled validation, target selection sample, target test).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.utilities import CombinedLoader
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Sampler, WeightedRandomSampler

from cvtransfer.data.box_splits import DetectionSplits
from cvtransfer.data.domains import DomainSplits
from cvtransfer.data.features import cached_features
from cvtransfer.data.folders import DatasetSplits
from cvtransfer.data.loaders import class_sample_weights, default_workers, feature_dataset, make_loader
from cvtransfer.data.masks import SegmentationSplits
from cvtransfer.data.memory import ImageMemory, loader_workers
from cvtransfer.data.transforms import Preprocessing
from cvtransfer.engine.devices import pick_device
from cvtransfer.models.factory import BuiltModel

if TYPE_CHECKING:
    from cvtransfer.config import Config

log = logging.getLogger(__name__)

Sample = tuple[str, int]


@dataclass
class Stream:
    """The loaders of one run, and the cached features when the inputs are features."""

    train: DataLoader[Any] | CombinedLoader
    val: list[DataLoader[Any]]
    train_labels: list[int]
    train_features: tuple[torch.Tensor, torch.Tensor] | None = None
    val_features: tuple[torch.Tensor, torch.Tensor] | None = None
    feature_seconds: float | None = None  # time to extract (or read from the cache) the features

    @property
    def paired(self) -> bool:
        return isinstance(self.train, CombinedLoader)


def labelled_stream(config: Config, splits: DatasetSplits, built: BuiltModel) -> Stream:
    """Shuffled labelled images (``--balanced-sampler``: every class equally often) and the val split."""
    workers = default_workers(config.num_workers)
    num_classes = len(splits.classes)
    labels = [y for _, y in splits.train]
    memory = ImageMemory.for_config(config)
    train = memory.dataset(splits.train, built.preprocessing, config.augment, "train")
    val = memory.dataset(splits.val, built.preprocessing, "none", "val")
    return Stream(
        make_loader(train, config.batch_size, train=True, seed=config.seed, num_workers=loader_workers(train, workers),
                    labels=labels,
                    num_classes=num_classes, balanced=config.balanced_sampler),
        [make_loader(val, config.batch_size, train=False, num_workers=loader_workers(val, workers))],
        labels,
    )


def segmentation_stream(config: Config, splits: SegmentationSplits, built: BuiltModel) -> Stream:
    """Shuffled square crops of images and masks (``--image-size``) and the val split at its own aspect,
    padded to the encoder's stride; ignored pixels (``--ignore-index``, padding) become IGNORE."""
    from cvtransfer.data.masks import SegmentationDataset
    from cvtransfer.tasks.segmentation import ignoring_collate

    workers = default_workers(config.num_workers)
    size = config.image_size or built.preprocessing.input_size

    def dataset(samples: list[tuple[str, str]], train: bool) -> SegmentationDataset:
        return SegmentationDataset(samples, built.preprocessing, size, config.augment if train else "none", train,
                                   splits.palette, splits.ignore_index, config.max_image_pixels,
                                   ignore_colours=splits.ignore_colours)

    collate = ignoring_collate(splits.ignore_index)
    generator = torch.Generator().manual_seed(config.seed)
    train = DataLoader(dataset(splits.train, True), batch_size=config.batch_size, shuffle=True, generator=generator,
                       num_workers=workers, collate_fn=collate, drop_last=len(splits.train) > config.batch_size,
                       pin_memory=torch.cuda.is_available())
    val = DataLoader(dataset(splits.val, False), batch_size=config.batch_size, num_workers=workers,
                     collate_fn=collate, pin_memory=torch.cuda.is_available())
    return Stream(train, [val], [])


def feature_stream(config: Config, splits: DatasetSplits, built: BuiltModel) -> Stream:
    """The frozen backbone's features of the train and val splits, computed once (cached), as batches."""
    workers = default_workers(config.num_workers)
    extract: dict[str, Any] = dict(backbone=built.backbone.name, weights_id=built.weights_id,
                                   cache_dir=config.cache_dir, batch_size=config.batch_size, num_workers=workers,
                                   device=pick_device(config.accelerator), max_pixels=config.max_image_pixels)
    start = time.perf_counter()
    train = cached_features(built.model.backbone, splits.train, built.preprocessing, **extract)
    val = cached_features(built.model.backbone, splits.val, built.preprocessing, **extract)
    seconds = time.perf_counter() - start
    log.info("features ready in %.1fs (%d dims)", seconds, train[0].shape[1])
    labels = train[1].tolist()
    return Stream(
        make_loader(feature_dataset(*train), config.batch_size, train=True, seed=config.seed, labels=labels,
                    num_classes=len(splits.classes), balanced=config.balanced_sampler),
        [make_loader(feature_dataset(*val), config.batch_size, train=False)],
        labels,
        train_features=train,
        val_features=val,
        feature_seconds=seconds,
    )


def head_on_features(built: BuiltModel) -> nn.Module:
    """What trains on cached features: the model's dropout and head."""
    return nn.Sequential(built.model.dropout, built.model.head)


def fixed_sample(samples: list[Sample], count: int, seed: int) -> list[Sample]:
    """A fixed, seeded sample of at most ``count`` items, in their original order."""
    if len(samples) <= count:
        return list(samples)
    chosen = sorted(random.Random(seed).sample(range(len(samples)), count))
    return [samples[i] for i in chosen]


def _pair_loader(dataset: Any, config: Config, seed: int, workers: int,
                 balance: tuple[list[int], int] | None = None) -> DataLoader[Any]:
    """Exactly ``iters_per_epoch`` batches per epoch, reshuffled; cycles through a small domain.

    ``balance``: (labels, number of classes) to draw every class equally often (``--balanced-sampler``).
    """
    generator = torch.Generator().manual_seed(seed)
    draws = config.iters_per_epoch * config.batch_size
    sampler: Sampler[int] = RandomSampler(dataset, num_samples=draws, generator=generator)
    if balance is not None:
        sampler = WeightedRandomSampler(class_sample_weights(*balance),  # type: ignore[arg-type]  # a Tensor works
                                        num_samples=draws, replacement=True, generator=generator)
    # workers start afresh each epoch, seeded from the generator: what an exact resume restores
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True,
                      num_workers=loader_workers(dataset, workers),
                      pin_memory=torch.cuda.is_available())


def detection_stream(config: Config, splits: DetectionSplits) -> Stream:
    """Shuffled images with their boxes (flipped together for training) and the val split, each at its own
    size: the detector resizes (shorter side ``--image-size``) and normalises inside."""
    from cvtransfer.data.box_splits import DetectionDataset, detection_collate

    workers = default_workers(config.num_workers)
    generator = torch.Generator().manual_seed(config.seed)
    train = DataLoader(DetectionDataset(splits.train, config.augment, True, config.max_image_pixels),
                       batch_size=config.batch_size, shuffle=True, generator=generator, num_workers=workers,
                       collate_fn=detection_collate, drop_last=len(splits.train) > config.batch_size)
    val = DataLoader(DetectionDataset(splits.val, "none", False, config.max_image_pixels), batch_size=config.batch_size,
                     num_workers=workers, collate_fn=detection_collate)
    return Stream(train, [val], [])


def episodic_stream(config: Config, splits: DatasetSplits, built: BuiltModel) -> Stream:
    """Training episodes of the train classes (--train-ways, --train-shots, --queries; --episodes-per-epoch a
    epoch, drawn afresh) and the same seeded episodes of the val classes every epoch (--ways, the first
    --shots, --queries)."""
    from cvtransfer.few_shot.episodes import sample_episodes
    from cvtransfer.few_shot.evaluation import parse_shots
    from cvtransfer.few_shot.sampler import EpisodeBatchSampler, EpisodeItems, fixed_episode_batches
    from cvtransfer.tasks.fewshot import VAL_EPISODES

    workers = default_workers(config.num_workers)
    memory = ImageMemory.for_config(config)
    shots = parse_shots(config.shots)[0]
    train_labels = [y for _, y in splits.train]
    sampler = EpisodeBatchSampler(train_labels, splits.classes, config.train_ways or config.ways,
                                  config.train_shots or shots, config.queries, config.episodes_per_epoch, config.seed)
    val_episodes = sample_episodes([y for _, y in splits.val], splits.classes, config.ways, shots, config.queries,
                                   min(config.episodes, VAL_EPISODES), config.seed)
    train = memory.dataset(splits.train, built.preprocessing, config.augment, "train")
    val = memory.dataset(splits.val, built.preprocessing, "none", "val")
    pin = torch.cuda.is_available()
    return Stream(
        DataLoader(EpisodeItems(train), batch_sampler=sampler, num_workers=loader_workers(train, workers),
                   pin_memory=pin),
        [DataLoader(EpisodeItems(val), batch_sampler=fixed_episode_batches(val_episodes, shots, config.queries),
                    num_workers=loader_workers(val, workers), pin_memory=pin)],
        train_labels,
    )


def paired_stream(config: Config, splits: DomainSplits, preprocessing: Preprocessing) -> Stream:
    """Source + target training pairs; [source val, target selection sample, target test] for validation."""
    workers = default_workers(config.num_workers)
    memory = ImageMemory.for_config(config)  # the target's images serve its training, selection and test sets
    labels = [y for _, y in splits.train]
    source = memory.dataset(splits.train, preprocessing, config.augment, "source")
    target = memory.dataset(splits.target_train, preprocessing, config.augment, "target")
    train = CombinedLoader({
        "source": _pair_loader(source, config, config.seed, workers,
                               balance=(labels, len(splits.classes)) if config.balanced_sampler else None),
        "target": _pair_loader(target, config, config.seed + 1, workers),
    }, mode="min_size")
    selection = fixed_sample(splits.target_train, config.selection_samples, config.seed)
    held = [memory.dataset(samples, preprocessing, "none", name)
            for samples, name in ((splits.val, "source val"), (selection, "target selection"),
                                  (splits.target_test, "target test")) if samples]
    val = [make_loader(dataset, config.batch_size, train=False, num_workers=loader_workers(dataset, workers))
           for dataset in held]
    return Stream(train, val, labels)
