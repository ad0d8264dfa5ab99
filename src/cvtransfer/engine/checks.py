"""What each training command accepts: its defaults, its run folder's name, and the options it refuses.

An option a command cannot honour is refused here in one line, before any run folder exists,
never silently ignored.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvtransfer.errors import ConfigError, unknown_name
from cvtransfer.losses import LOSSES, addable, parse_loss_spec
from cvtransfer.strategies import get_strategy
from cvtransfer.strategies.linear import probe_l2_values, solved_head
from cvtransfer.tasks import get_task

if TYPE_CHECKING:
    from cvtransfer.config import Config

# What the DA papers (and TLlib) train with; ``adapt`` starts from these unless told otherwise.
ADAPT_DEFAULTS: dict[str, Any] = {"optimizer": "sgd", "lr": 0.01, "weight_decay": 1e-3, "scheduler": "inv",
                                  "epochs": 20}

# Options of fit that adapt cannot honour, with their defaults and why: refused, never silently ignored.
NOT_FOR_ADAPT: dict[str, tuple[Any, str]] = {
    "test_split": (0.0, "adapt tests on the target: give --target-test DIR or a TGT_DIR/test/ folder"),
    "mixup": (0.0, "source and target batches are not mixed"),
    "cutmix": (0.0, "source and target batches are not mixed"),
    "monitor": ("val_loss", "adapt keeps the epoch chosen by --select-by"),
}


def default_run_dir(config: Config, prefix: str = "") -> Path:
    """runs/[prefix]<backbone>-<strategy>-<time>."""
    from cvtransfer.models.metadata import TORCHVISION_DETECTORS

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    whole = config.task == "detection" and config.detector in TORCHVISION_DETECTORS  # its backbone built in
    model = config.detector if whole else config.backbone.replace("/", "_")
    return Path("runs") / f"{prefix}{model}-{config.strategy}-{stamp}"


def default_adapt_dir(config: Config) -> Path:
    """runs/adapt-<method>-<backbone>-<strategy>-<time> when ``--out`` is not given."""
    return default_run_dir(config, prefix=f"adapt-{config.method}-")


def adaptation_config(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` over :data:`ADAPT_DEFAULTS` (what the user gives wins)."""
    return {**ADAPT_DEFAULTS, **values}


def check_loss_terms(config: Config) -> None:
    """Refuse ``--loss`` terms the run cannot honour: given twice, already the strategy's, or a staged method."""
    names = [name for name, _ in parse_loss_spec(config.loss)]
    strategy = get_strategy(config.strategy)
    for name in names:
        if names.count(name) > 1 or name in {own for own, _ in strategy.terms}:
            given = f"--strategy {config.strategy} already adds it" if names.count(name) == 1 else "it is given twice"
            raise ConfigError(f"--loss {name}: {given}; give each loss term once")
        if not addable(name):
            raise ConfigError(f"--loss {name} changes how the model is trained (its own stage, encoders or frozen "
                              f"parts): use it as the method, --method {name}, not as an added term")
    if names and solved_head(config):
        raise ConfigError(f"--loss does not apply to a solved head (--head {config.head}), which is fitted by its "
                          "solver, not trained with the run's loss: use --head linear, or leave out --loss")


def check_strategy_options(config: Config) -> None:
    """Refuse options the strategy would ignore: a head solver without the linear probe, augmentation of
    cached features."""
    strategy = get_strategy(config.strategy)
    if config.head not in ("auto", "linear") and not strategy.uses_feature_cache:
        raise ConfigError(f"--head {config.head} fits a classifier on cached features: it needs "
                          f"--strategy linear, not {config.strategy}")
    if config.probe_l2 != "auto" and not solved_head(config):
        raise ConfigError("--probe-l2 sets the penalty of the lbfgs head: it needs --strategy linear with --head "
                          "auto or lbfgs; leave it out")
    probe_l2_values(config)  # a malformed --probe-l2 is refused before anything is read
    if strategy.uses_feature_cache and config.task == "classification":  # dense tasks do not cache the maps
        for flag, value, default in (("--augment", config.augment, "light"), ("--mixup", config.mixup, 0.0),
                                     ("--cutmix", config.cutmix, 0.0)):
            if value != default and not (flag == "--augment" and value == "none"):
                raise ConfigError(f"{flag} {value} does not apply to --strategy {config.strategy}: its features are "
                                  "computed once, without augmentation; leave it out, or use --strategy partial")


def check_fit_options(config: Config) -> None:
    """Refuse, in one line, what ``fit`` cannot honour: a loss term that needs target images, ..."""
    check_strategy_options(config)
    for name, _ in parse_loss_spec(config.loss):
        if LOSSES.get(name).needs_target:
            raise ConfigError(f"--loss {name} compares source and target images: use cvtransfer adapt with --target "
                              "(fit has labelled images only)")
    check_loss_terms(config)


def check_adapt_options(config: Config) -> None:
    """Refuse, in one line, an option of ``config`` that adaptation would otherwise ignore."""
    for name, (default, reason) in NOT_FOR_ADAPT.items():
        if getattr(config, name) != default:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} does not apply to adapt ({reason}); leave it out")
    if get_strategy(config.strategy).uses_feature_cache:
        raise ConfigError(f"--strategy {config.strategy} trains on cached features, but adaptation must train "
                          "the features: use full, partial, gradual or l2sp")
    if config.method in {name for name, _ in parse_loss_spec(config.loss)}:
        raise ConfigError(f"--loss {config.method} is already the --method: give it once")
    if config.mcc > 0 and "mcc" in {name for name, _ in parse_loss_spec(config.loss)}:
        raise ConfigError("--mcc and --loss mcc add the same term: give it once")
    check_loss_terms(config)
    check_strategy_options(config)


# Options of classification that segmentation and detection cannot honour (their defaults) and why.
NOT_FOR_SEGMENTATION: dict[str, tuple[Any, str]] = {
    "target": (None, "domain adaptation is for classification so far; train with fit"),
    "mixup": (0.0, "images are not mixed with their masks"),
    "cutmix": (0.0, "images are not mixed with their masks"),
    "balanced_sampler": (False, "classes are counted per pixel, not per image"),
    "class_weights": ("none", "class weights per pixel are not computed yet"),
    "loss": ("", "the loss terms read pooled features"),
    "in_memory": ("auto", "segmentation reads its images and masks from the files"),
}
NOT_FOR_DETECTION: dict[str, tuple[Any, str]] = {
    "target": (None, "domain adaptation is for classification so far; train with fit"),
    "mixup": (0.0, "images are not mixed with their boxes"),
    "cutmix": (0.0, "images are not mixed with their boxes"),
    "balanced_sampler": (False, "an image holds boxes of several classes"),
    "class_weights": ("none", "the detector's losses take no class weights"),
    "loss": ("", "the loss terms read pooled features"),
    "label_smoothing": (0.0, "the detector's losses take no label smoothing"),
    "in_memory": ("auto", "detection reads its images from the files"),
    "monitor": ("val_loss", "detection keeps the epoch of the best validation mAP"),
}
# The options of one task (their defaults), refused with another.
TASK_ONLY: dict[str, dict[str, Any]] = {
    "segmentation": {"decoder": "unet", "ignore_index": 255, "classes_file": ""},
    "detection": {"detector": "fasterrcnn", "norm": "frozen", "anchor_sizes": "", "missing_labels": "error"},
    "fewshot": {"train_ways": 0, "train_shots": 0, "episodes_per_epoch": 100, "ways": 5, "shots": "1,5",
                "queries": 15, "episodes": 600, "bn_stats": "eval"},
}
NOT_FOR_FEWSHOT: dict[str, tuple[Any, str]] = {
    "target": (None, "episodic training has no domain adaptation yet"),
    "mixup": (0.0, "an episode's classes are not mixed"),
    "cutmix": (0.0, "an episode's classes are not mixed"),
    "balanced_sampler": (False, "every episode draws its classes equally often already"),
    "class_weights": ("none", "every episode draws its classes equally often already"),
    "loss": ("", "the loss terms read a classifier's logits"),
    "label_smoothing": (0.0, "the prototypical loss takes no label smoothing"),
}
NOT_FOR = {"segmentation": NOT_FOR_SEGMENTATION, "detection": NOT_FOR_DETECTION, "fewshot": NOT_FOR_FEWSHOT}
HEAD_ROLE = {"segmentation": "the decoder", "detection": "the detector's FPN and heads"}


def check_task_options(config: Config) -> None:
    """Refuse options the task cannot honour: classification's with --task segmentation or detection, and
    each task's own options with another task."""
    for name, (default, reason) in NOT_FOR.get(config.task, {}).items():
        if getattr(config, name) != default:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} does not apply to --task {config.task} ({reason}); leave it out")
    if config.task in HEAD_ROLE and config.head not in ("auto", "linear"):
        raise ConfigError(f"--head {config.head} fits a classifier on pooled features: with --task {config.task} "
                          f"--strategy linear trains {HEAD_ROLE[config.task]} on the frozen backbone; leave --head out")
    for task, options in TASK_ONLY.items():
        if task == config.task:
            continue
        for name, default in options.items():
            if getattr(config, name) != default:
                raise ConfigError(f"--{name.replace('_', '-')} applies to --task {task} only; add --task {task} or "
                                  "leave it out")
    if config.task == "detection":
        check_detection_options(config)
    get_task(config.task).check_options(config)


def check_detection_options(config: Config) -> None:
    """--anchor-sizes as the detector takes them; no backbone or anchors for torchvision's whole detectors."""
    from cvtransfer.config import Config
    from cvtransfer.models.metadata import DETECTORS, TORCHVISION_DETECTORS
    from cvtransfer.tasks.detection import anchor_levels, anchor_sizes

    if config.detector not in DETECTORS + TORCHVISION_DETECTORS:
        raise unknown_name("detector", config.detector, DETECTORS + TORCHVISION_DETECTORS)
    if config.detector in TORCHVISION_DETECTORS:
        if config.backbone != Config.backbone:
            raise ConfigError(f"--backbone does not apply to --detector {config.detector} (torchvision's whole detector, "
                              "its backbone built in); leave it out, or name a family (fasterrcnn, ...) for your backbone")
        if config.anchor_sizes:
            raise ConfigError(f"--anchor-sizes does not apply to --detector {config.detector} (its COCO heads are "
                              "trained for its own anchors); leave it out")
    elif config.weights == "coco":
        raise ConfigError(f"--weights coco is for torchvision's whole COCO detectors (e.g. --detector "
                          f"{config.detector}_resnet50_fpn): with --detector {config.detector} use imagenet, none or a file")
    if config.anchor_sizes not in ("", "auto"):
        try:
            sizes = anchor_sizes(config)
        except ValueError:
            sizes = None
        if not sizes or any(size <= 0 for size in sizes):
            raise ConfigError(f"--anchor-sizes '{config.anchor_sizes}' is not a list of positive pixel sizes: give "
                              "e.g. 16,32,64,128,256 (one per level), auto, or leave it out")
        levels = anchor_levels(config.detector)
        if len(sizes) != levels:
            raise ConfigError(f"--anchor-sizes gives {len(sizes)} sizes but --detector {config.detector} has {levels} "
                              f"levels: give {levels} sizes, auto, or leave it out")


def check_options(config: Config) -> None:
    """The checks of the command that trains ``config``: adapt when it names a target, else fit."""
    check_task_options(config)
    if config.target is not None:
        check_adapt_options(config)
    else:
        check_fit_options(config)
