"""One adaptation run from config to run folder, through the one engine.

    source + target -> DomainSplits -> model (+ bottleneck) + strategy -> domain losses
    -> AdaptationModule + Trainer -> best epoch by the unsupervised score -> run folder + shift.json

ADDA's two stages are two runs of the same engine: ``RUN_DIR/source_stage`` (method
``source-only``), then the adversarial stage starting from its weights.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Sampler, WeightedRandomSampler

from cvtransfer.losses import build_domain_losses
from cvtransfer.scores.selection import SELECTION_SCORES
from cvtransfer.scores.shift import domain_shift
from cvtransfer.config import Config
from cvtransfer.data.domains import (
    DomainSplits,
    discover_domains,
    domain_dataset,
    domain_samples,
    feature_width,
)
from cvtransfer.data.features import compute_features
from cvtransfer.data.folders import write_skipped
from cvtransfer.data.loaders import class_loss_weights, class_sample_weights, default_workers, make_loader
from cvtransfer.data.transforms import Preprocessing, eval_transform, train_transform
from cvtransfer.engine.adaptation import AdaptationModule, history_columns
from cvtransfer.engine.checkpoints import load_checkpoint, network_state
from cvtransfer.engine.trainer import CHECKPOINT_DIR, build_trainer
from cvtransfer.errors import ConfigError
from cvtransfer.fitting import SPLITS_FILE, default_run_dir, is_main_process, pick_device
from cvtransfer.io import read_json, write_json
from cvtransfer.models.factory import BuiltModel, build_feature_model, build_model
from cvtransfer.run import Run, finish_run
from cvtransfer.strategies import get_strategy

log = logging.getLogger(__name__)

FEATURE_PREPROCESSING = Preprocessing(input_size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # unused by rows

SHIFT_FILE = "shift.json"
SOURCE_STAGE = "source_stage"
# What the DA papers (and TLlib) train with; ``adapt`` starts from these unless told otherwise.
ADAPT_DEFAULTS: dict[str, Any] = {"optimizer": "sgd", "lr": 0.01, "weight_decay": 1e-3, "scheduler": "inv",
                                  "epochs": 20}


def default_adapt_dir(config: Config) -> Path:
    """runs/adapt-<method>-<backbone>-<strategy>-<time> when ``--out`` is not given."""
    return default_run_dir(config, prefix=f"adapt-{config.method}-")


# Options of fit that adapt cannot honour, with their defaults and why: refused, never silently ignored.
NOT_FOR_ADAPT: dict[str, tuple[Any, str]] = {
    "test_split": (0.0, "adapt tests on the target: give --target-test DIR or a TGT_DIR/test/ folder"),
    "mixup": (0.0, "source and target batches are not mixed"),
    "cutmix": (0.0, "source and target batches are not mixed"),
    "monitor": ("val_loss", "adapt keeps the epoch chosen by --select-by"),
}


def check_adapt_options(config: Config) -> None:
    """Refuse, in one line, an option of ``config`` that adaptation would otherwise ignore."""
    for name, (default, reason) in NOT_FOR_ADAPT.items():
        if getattr(config, name) != default:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} does not apply to adapt ({reason}); leave it out")
    if get_strategy(config.strategy).uses_feature_cache:
        raise ConfigError(f"--strategy {config.strategy} trains on cached features, but adaptation must train "
                          "the features: use full, partial, gradual or l2sp")


def adaptation_config(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` over :data:`ADAPT_DEFAULTS` (what the user gives wins)."""
    return {**ADAPT_DEFAULTS, **values}


def load_domain_splits(config: Config, run_dir: Path) -> DomainSplits:
    """The run's two domains: read back when resuming, else discovered and saved in splits.json."""
    saved = run_dir / SPLITS_FILE
    if saved.is_file():
        return DomainSplits.from_dict(read_json(saved))
    if config.data is None or config.target is None:
        raise ConfigError("adapt needs --source SRC_DIR and --target TGT_DIR")
    splits = discover_domains(config.data, config.target, config.target_test, config.val_split, config.seed,
                              config.max_image_pixels)
    if is_main_process():
        write_json(saved, splits.to_dict())
        write_json(run_dir / "classes.json", splits.classes)
        write_skipped(splits, run_dir / "skipped.txt")
    log.info("domains: %d classes; source %d train, %d val; target %d unlabelled for training, %d labelled for "
             "testing", len(splits.classes), len(splits.train), len(splits.val), len(splits.target_train),
             len(splits.target_test))
    return splits


def build_domain_model(config: Config, splits: DomainSplits, weights: str | None = None) -> BuiltModel:
    """The backbone (or, for feature files, an MLP) with the bottleneck and a head for the classes."""
    weights = weights or config.weights
    num_classes = len(splits.classes)
    if splits.features:
        return build_feature_model(feature_width(splits.train), weights, num_classes, config.mlp_dim,
                                   config.drop_rate, config.seed, config.bottleneck_dim,
                                   class_names=splits.classes, allow_partial_weights=config.allow_partial_weights)
    return build_model(config.backbone, weights, num_classes, config.image_size, config.drop_rate, config.seed,
                       bottleneck_dim=config.bottleneck_dim, class_names=splits.classes,
                       allow_partial_weights=config.allow_partial_weights)


def _sample(samples: list[tuple[str, int]], count: int, seed: int) -> list[tuple[str, int]]:
    """A fixed, seeded sample of at most ``count`` items, in their original order."""
    if len(samples) <= count:
        return list(samples)
    chosen = sorted(random.Random(seed).sample(range(len(samples)), count))
    return [samples[i] for i in chosen]


def _pair_loader(dataset: Any, config: Config, seed: int, workers: int,
                 balance: tuple[list[int], int] | None = None) -> DataLoader:
    """Exactly ``iters_per_epoch`` batches per epoch, reshuffled; cycles through a small domain.

    ``balance``: (labels, number of classes) to draw every class equally often (``--balanced-sampler``).
    """
    generator = torch.Generator().manual_seed(seed)
    draws = config.iters_per_epoch * config.batch_size
    sampler: Sampler = RandomSampler(dataset, num_samples=draws, generator=generator)
    if balance is not None:
        sampler = WeightedRandomSampler(class_sample_weights(*balance), num_samples=draws, replacement=True,
                                        generator=generator)
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def adaptation_loaders(config: Config, splits: DomainSplits, preprocessing: Preprocessing
                       ) -> tuple[CombinedLoader, list[DataLoader]]:
    """(source+target training pairs, [source val, target selection sample, target test])."""
    workers = default_workers(config.num_workers)
    train_tf, eval_tf = train_transform(preprocessing, config.augment), eval_transform(preprocessing)
    pixels = config.max_image_pixels
    train = CombinedLoader({
        "source": _pair_loader(domain_dataset(splits.train, train_tf, pixels), config, config.seed, workers,
                               balance=([y for _, y in splits.train], len(splits.classes))
                               if config.balanced_sampler else None),
        "target": _pair_loader(domain_dataset(splits.target_train, train_tf, pixels), config, config.seed + 1,
                               workers),
    }, mode="min_size")
    selection = _sample(splits.target_train, config.selection_samples, config.seed)
    val = [make_loader(domain_dataset(samples, eval_tf, pixels), config.batch_size, train=False, num_workers=workers)
           for samples in (splits.val, selection, splits.target_test) if samples]
    return train, val


def shift_features(network: nn.Module, splits: DomainSplits, preprocessing: Preprocessing, config: Config
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``network``'s features of a fixed sample of source training and target images."""
    device = pick_device(config.accelerator)
    kwargs = dict(batch_size=config.batch_size, device=device, max_pixels=config.max_image_pixels)
    source = compute_features(network, _sample(splits.train, config.shift_samples, config.seed), preprocessing,
                              **kwargs)[0]
    target = compute_features(network, _sample(splits.target_train, config.shift_samples, config.seed), preprocessing,
                              **kwargs)[0]
    network.cpu()
    return source, target


def measure(network: nn.Module, splits: DomainSplits, preprocessing: Preprocessing, config: Config
            ) -> dict[str, Any]:
    """MMD, proxy A-distance and Wasserstein between the domains in ``network``'s feature space."""
    return domain_shift(*shift_features(network, splits, preprocessing, config), config.shift_samples, config.seed)


def shift_spaces(config: Config, splits: DomainSplits) -> dict[str, str]:
    """What feature space each measure of shift.json is taken in (before and after share one)."""
    bottleneck = f"the {config.bottleneck_dim}-d bottleneck after adaptation"
    if splits.features:
        network = f"the MLP's {config.mlp_dim}-d features"
        return {"network": network, "input": f"the feature files' own {feature_width(splits.train)}-d features",
                "before": f"{network} at initialisation", "after": f"{network} after adaptation",
                "after_bottleneck": bottleneck}
    network = f"{config.backbone} features"
    return {"network": network, "before": f"{network}, starting weights", "after": f"{network} after adaptation",
            "after_bottleneck": bottleneck}


def measure_before(built: BuiltModel, splits: DomainSplits, config: Config) -> dict[str, Any]:
    """The shift before training, in the space of the network that adaptation trains (``after`` is in the same).

    For feature files that network is the MLP, at its initial weights; the files' own features,
    a space of another width, are measured as ``input``.
    """
    measures = {"before": measure(built.model.backbone, splits, built.preprocessing, config)}
    if splits.features:
        measures["input"] = measure(nn.Identity(), splits, built.preprocessing, config)
    return measures


def adapt_run(config: Config, run_dir: Path, callbacks: list[pl.Callback] | None = None,
              resume_from: Path | None = None) -> Run:
    """Train ``config.method`` from ``config.data`` (source) to ``config.target``; finish the run folder."""
    splits = load_domain_splits(config, run_dir)
    if not splits.target_labelled:
        log.warning("the target has no labelled images: target accuracy cannot be measured; pass --target-test")
    weights = None
    if config.method == "adda":
        weights = str(_source_stage(config, run_dir, splits).path)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    built = build_domain_model(config, splits, weights)
    model = built.model
    check_adapt_options(config)
    strategy = get_strategy(config.strategy)(model, config)
    strategy.setup()
    losses = build_domain_losses(config, model.features_dim, len(splits.classes))
    losses.attach(model)
    shift: dict[str, Any] = {}
    if is_main_process() and resume_from is None:
        shift = {"spaces": shift_spaces(config, splits), **measure_before(built, splits, config)}
        write_json(run_dir / SHIFT_FILE, shift)
    head_lr = config.lr * config.head_lr_mult

    def param_groups() -> list[dict[str, Any]]:
        return strategy.param_groups() + losses.param_groups(head_lr, config.weight_decay)

    weights_by_class = class_loss_weights([y for _, y in splits.train], len(splits.classes)) \
        if config.class_weights == "auto" else None
    module = AdaptationModule(model, config, len(splits.classes), param_groups, losses, strategy.regularizer(),
                              weights_by_class)
    train_loader, val_loaders = adaptation_loaders(config, splits, built.preprocessing)
    monitor = None if config.select_by == "none" else f"val_{config.select_by}"
    mode = "max" if monitor is None else SELECTION_SCORES.get(config.select_by).mode
    trainer = build_trainer(config, run_dir, strategy.callbacks() + list(callbacks or []),
                            extra_metrics=history_columns(losses), monitor=(monitor, mode))
    trainer.fit(module, train_loader, val_loaders, ckpt_path=resume_from, weights_only=True)
    if not trainer.is_global_zero:
        return Run(run_dir)
    best = run_dir / CHECKPOINT_DIR / "best.ckpt"
    if best.is_file():
        model.load_state_dict(network_state(load_checkpoint(best)))
    shift = read_json(run_dir / SHIFT_FILE) if (run_dir / SHIFT_FILE).is_file() else {}
    if "before" not in shift:  # resumed before it was written: the same starting network, re-made
        pl.seed_everything(config.seed, workers=True, verbose=False)
        shift.update(measure_before(build_domain_model(config, splits, weights), splits, config))
        shift["spaces"] = shift_spaces(config, splits)
    elif "spaces" not in shift:  # a shift.json of an older version: its "before" space is not known
        shift["spaces"] = {name: label for name, label in shift_spaces(config, splits).items()
                           if name in ("after", "after_bottleneck")}
    shift["after"] = measure(model.backbone, splits, built.preprocessing, config)
    shift["after_bottleneck"] = measure(nn.Sequential(model.backbone, model.bottleneck), splits,
                                        built.preprocessing, config)
    write_json(run_dir / SHIFT_FILE, shift)
    log.info("domain shift (proxy A-distance) before %.3f, after %.3f", shift["before"]["proxy_a_distance"],
             shift["after"]["proxy_a_distance"])
    if not splits.test:
        splits.test = splits.val  # nothing labelled on the target: evaluate on the source validation split
    run = finish_run(run_dir, config, splits.classes, model, built.preprocessing)
    if config.report:
        from cvtransfer.report import write_report_safely

        write_report_safely(run.path)  # a report problem is a warning: the run is complete
    return run


def _source_stage(config: Config, run_dir: Path, splits: DomainSplits) -> Run:
    """ADDA's first stage: a source-only run in RUN_DIR/source_stage (reused when already finished)."""
    stage_dir = run_dir / SOURCE_STAGE
    if (stage_dir / "model.safetensors").is_file():
        return Run(stage_dir)
    stage = config.replace(method="source-only", mcc=0.0, epochs=config.source_epochs, report=False, out=str(stage_dir))
    stage_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        stage.save(stage_dir / "config.yaml")
        write_json(stage_dir / SPLITS_FILE, splits.to_dict())
    last = stage_dir / CHECKPOINT_DIR / "last.ckpt"
    log.info("adda: source stage (%d epochs) in %s", stage.epochs, stage_dir)
    return adapt_run(stage, stage_dir, resume_from=last if last.is_file() else None)


def measure_shift(config: Config, source: str | Path, target: str | Path) -> dict[str, Any]:
    """The shift between two domains in the features of ``config.backbone`` / ``config.weights``."""
    source_samples = domain_samples(source, config.max_image_pixels)
    target_samples = domain_samples(target, config.max_image_pixels)
    splits = DomainSplits(classes=["?", "?"], train=source_samples, val=[], target_train=target_samples)
    if splits.features:
        network: nn.Module = nn.Identity()
        preprocessing = FEATURE_PREPROCESSING
        described = f"the features of {source} and {target}"
    else:
        built = build_model(config.backbone, config.weights, 2, config.image_size,
                            allow_partial_weights=config.allow_partial_weights)
        network, preprocessing = built.model.backbone, built.preprocessing
        described = f"{config.backbone} features ({built.weights_id})"
    result = measure(network, splits, preprocessing, config)
    return {"source": str(source), "target": str(target), "features": described, **result}
