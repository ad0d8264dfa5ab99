"""One run from config to run folder: data, model, strategy, engine, then the outputs.

    config -> splits -> model + weights -> strategy -> TransferModule + Trainer -> run folder
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import nn
from torch.utils.data import DataLoader

from cvtransfer.config import Config
from cvtransfer.data.features import cached_features
from cvtransfer.data.folders import DatasetSplits, discover, write_skipped
from cvtransfer.data.loaders import (
    ImageDataset,
    class_loss_weights,
    default_workers,
    feature_dataset,
    for_world_size,
    make_loader,
)
from cvtransfer.data.transforms import eval_transform, train_transform
from cvtransfer.engine.checkpoints import load_checkpoint, network_state
from cvtransfer.engine.history import write_history
from cvtransfer.engine.module import TransferModule
from cvtransfer.engine.trainer import CHECKPOINT_DIR, build_trainer
from cvtransfer.errors import ConfigError
from cvtransfer.io import read_json, write_json
from cvtransfer.models.factory import BuiltModel, build_model
from cvtransfer.strategies import Strategy, get_strategy
from cvtransfer.strategies.linear import fit_sklearn_head

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.json"
FEATURE_TIME_FILE = "feature_extraction.json"  # seconds spent extracting (or reading cached) features


def default_run_dir(config: Config, prefix: str = "") -> Path:
    """runs/[prefix]<backbone>-<strategy>-<time>."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{prefix}{config.backbone.replace('/', '_')}-{config.strategy}-{stamp}"


def is_main_process() -> bool:
    """True on the process that writes the run folder (global rank 0 under torchrun/SLURM)."""
    return rank_zero_only.rank == 0


def pick_device(accelerator: str = "auto") -> torch.device:
    """The device for inference outside the Trainer (feature extraction, evaluation)."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if accelerator in ("auto", "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_splits(config: Config, run_dir: Path) -> DatasetSplits:
    """The run's splits: read back when resuming (same files, same split), else discovered and saved."""
    saved = run_dir / SPLITS_FILE
    if saved.is_file():
        return DatasetSplits.from_dict(read_json(saved))
    if config.data is None:
        raise ConfigError("no data given: pass DATA_DIR (or data= in the config)")
    splits = discover(config.data, config.val_split, config.test_split, config.seed, config.max_image_pixels)
    if not is_main_process():  # every rank finds the same seeded split; one writes it
        return splits
    write_json(saved, splits.to_dict())
    write_json(run_dir / "classes.json", splits.classes)
    write_skipped(splits, run_dir / "skipped.txt")
    log.info(
        "data: %d classes; %d train, %d val, %d test images%s", len(splits.classes), len(splits.train),
        len(splits.val), len(splits.test),
        f"; {len(splits.skipped)} files skipped (list in {run_dir / 'skipped.txt'})" if splits.skipped else "",
    )
    return splits


@dataclass
class TrainingSetup:
    """Everything the Trainer needs, and what the outputs are made from."""

    built: BuiltModel
    strategy: Strategy
    network: nn.Module  # what the module trains: the model, or its head on cached features
    train_loader: DataLoader
    val_loader: DataLoader
    train_features: tuple[torch.Tensor, torch.Tensor] | None = None
    val_features: tuple[torch.Tensor, torch.Tensor] | None = None
    feature_seconds: float | None = None  # time to extract (or read from the cache) the features

    def module(self, config: Config, num_classes: int) -> TransferModule:
        labels = [y for _, y in self.train_loader.dataset.samples] if self.train_features is None \
            else self.train_features[1].tolist()
        weights = class_loss_weights(labels, num_classes) if config.class_weights == "auto" else None
        return TransferModule(
            self.network, config, num_classes, self.strategy.param_groups, self.strategy.regularizer(), weights,
            channels_last=pick_device(config.accelerator).type == "cuda" and self.train_features is None,
        )


def prepare_training(config: Config, splits: DatasetSplits) -> TrainingSetup:
    """Build the model, apply the strategy, and make the loaders (of images, or of cached features)."""
    num_classes = len(splits.classes)
    built = build_model(config.backbone, config.weights, num_classes, config.image_size, config.drop_rate,
                        config.seed, class_names=splits.classes,
                        allow_partial_weights=config.allow_partial_weights)
    strategy = get_strategy(config.strategy)(built.model, config)
    strategy.setup()
    workers = default_workers(config.num_workers)
    if strategy.uses_feature_cache:
        return _feature_setup(config, splits, built, strategy, workers)
    pre = built.preprocessing
    train = ImageDataset(splits.train, train_transform(pre, config.augment), config.max_image_pixels)
    val = ImageDataset(splits.val, eval_transform(pre), config.max_image_pixels)
    labels = [y for _, y in splits.train]
    return TrainingSetup(
        built, strategy, built.model,
        make_loader(train, config.batch_size, train=True, seed=config.seed, num_workers=workers, labels=labels,
                    num_classes=num_classes, balanced=config.balanced_sampler),
        make_loader(val, config.batch_size, train=False, num_workers=workers),
    )


def _feature_setup(
    config: Config, splits: DatasetSplits, built: BuiltModel, strategy: Strategy, workers: int
) -> TrainingSetup:
    extract = dict(backbone=built.backbone.name, weights_id=built.weights_id, cache_dir=config.cache_dir,
                   batch_size=config.batch_size, num_workers=workers,
                   device=pick_device(config.accelerator), max_pixels=config.max_image_pixels)
    start = time.perf_counter()
    train = cached_features(built.model.backbone, splits.train, built.preprocessing, **extract)
    val = cached_features(built.model.backbone, splits.val, built.preprocessing, **extract)
    seconds = time.perf_counter() - start
    log.info("features ready in %.1fs (%d dims)", seconds, train[0].shape[1])
    network = nn.Sequential(built.model.dropout, built.model.head)
    labels = train[1].tolist()
    return TrainingSetup(
        built, strategy, network,
        make_loader(feature_dataset(*train), config.batch_size, train=True, seed=config.seed, labels=labels,
                    num_classes=len(splits.classes), balanced=config.balanced_sampler),
        make_loader(feature_dataset(*val), config.batch_size, train=False),
        train_features=train,
        val_features=val,
        feature_seconds=seconds,
    )


def record_feature_time(run_dir: Path, setup: TrainingSetup) -> None:
    """FEATURE_TIME_FILE in the run folder: the training time of a probe includes its feature extraction.

    Written once: a resumed run reads the features back from the cache, which is not the time they took.
    """
    file = run_dir / FEATURE_TIME_FILE
    if setup.feature_seconds is not None and setup.train_features is not None and not file.exists():
        write_json(file, {"seconds": setup.feature_seconds, "dims": int(setup.train_features[0].shape[1])})


def train(
    config: Config, run_dir: Path, splits: DatasetSplits, callbacks: list[pl.Callback] | None = None,
    resume_from: Path | None = None,
) -> TrainingSetup:
    """Train according to ``config``, writing checkpoints and history into ``run_dir``."""
    pl.seed_everything(config.seed, workers=True, verbose=False)
    setup = prepare_training(config, splits)
    if setup.train_features is not None and config.head in ("logistic", "svm"):
        _fit_sklearn(config, run_dir, setup)
        return setup
    module = setup.module(config, len(splits.classes))
    trainer = build_trainer(config, run_dir, setup.strategy.callbacks() + list(callbacks or []))
    setup.train_loader = for_world_size(setup.train_loader, trainer.world_size)
    trainer.fit(module, setup.train_loader, setup.val_loader, ckpt_path=resume_from, weights_only=True)
    if trainer.is_global_zero:
        best = run_dir / CHECKPOINT_DIR / "best.ckpt"
        if best.is_file():
            setup.network.load_state_dict(network_state(load_checkpoint(best)))
    return setup


def _fit_sklearn(config: Config, run_dir: Path, setup: TrainingSetup) -> None:
    """Fit a scikit-learn head on the cached features and record its one-row history."""
    start = time.perf_counter()
    fit_sklearn_head(setup.built.model, *setup.train_features, kind=config.head, seed=config.seed)
    row: dict[str, float] = {"epoch": 0}
    head = nn.Sequential(setup.built.model.dropout, setup.built.model.head).eval()
    for split, (features, labels) in (("train", setup.train_features), ("val", setup.val_features)):
        with torch.no_grad():
            logits = head(features)
        row[f"{split}_loss"] = float(nn.functional.cross_entropy(logits, labels))
        row[f"{split}_accuracy"] = float((logits.argmax(1) == labels).float().mean())
    row["seconds"] = time.perf_counter() - start
    write_history(run_dir / "history.csv", [row])
