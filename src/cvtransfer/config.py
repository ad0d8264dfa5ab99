"""One typed Config shared by the CLI, YAML files and the Python API.

Every field carries its help text and its group in ``metadata``; the CLI builds its options from
these fields, so a setting added here is available everywhere at once.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from cvtransfer import plugins
from cvtransfer.errors import ConfigError, unknown_name
from cvtransfer.options import (  # noqa: F401  (re-exported: the groups are part of this module's interface)
    ADAPT,
    CHOOSE,
    DATA,
    FEWSHOT,
    MODEL,
    OPTIM,
    OUTPUT,
    STRATEGY,
    TRAIN,
    TRAINING_GROUPS,
    opt,
    plugin_fields,
)

if not getattr(plugins, "LOADED", False):  # a plug-in module imported cvtransfer.config while loading
    raise ImportError("cvtransfer.config was imported while the plug-ins were loading: a plug-in module must import "
                      "Config only under TYPE_CHECKING")


@dataclass
class CoreConfig:
    """The settings of the engine; the Config adds those the plug-ins declare (see ``options.py``)."""

    # -- data
    data: str | None = opt(None, "DATA_DIR: train/ val/ [test/] class folders, plain class folders, or a CSV (path,label).", DATA)
    val_split: float = opt(0.2, "Fraction of the whole data held out for validation when DATA_DIR has no val/ folder (stratified, seeded).", DATA, 0.0, 0.9)
    test_split: float = opt(0.0, "Fraction of the whole data held out for testing when DATA_DIR has no test/ folder.", DATA, 0.0, 0.9)
    image_size: int | None = opt(None, "Input size in pixels; default: the weights' pretrained config.", DATA, 8, 4096)
    augment: Literal["none", "light", "strong"] = opt("light", "Training augmentation: none, light (crop+flip), strong (+TrivialAugment, erasing).", DATA)
    mixup: float = opt(0.0, "MixUp alpha (0 = off).", DATA, 0.0)
    cutmix: float = opt(0.0, "CutMix alpha (0 = off).", DATA, 0.0)
    batch_size: int = opt(32, "Images per batch (per device).", DATA, 1)
    num_workers: int = opt(-1, "Data loading processes; -1 picks from the machine.", DATA, -1)
    class_weights: Literal["none", "auto"] = opt("none", "auto: weight the loss by inverse class frequency.", DATA)
    balanced_sampler: bool = opt(False, "Sample classes equally often (imbalanced data).", DATA)
    max_image_pixels: int = opt(89_478_485, "Images with more pixels are refused as decompression bombs.", DATA, 1)
    in_memory: Literal["auto", "on", "off"] = opt(
        "auto", "Decode images once and keep them in memory (auto: when they fit in --memory-limit-mb; on: "
        "whatever their size; off: read the files every step).", DATA)
    memory_limit_mb: int = opt(2048, "--in-memory auto keeps the decoded images in memory only within this many MB.",
                               DATA, 0)
    task: str = opt("classification", "What is predicted: {tasks}.", DATA)
    # -- model
    backbone: str = opt("resnet18", "timm or torchvision model name (tv/resnet50 forces torchvision).", MODEL)
    weights: str = opt("imagenet", "imagenet (hub), none (random init), or PATH to .safetensors/.pth/.ckpt/run folder; "
                       "rank/auto: one per backbone, or NAME=PATH pairs; coco: a COCO detector's own.", MODEL)
    drop_rate: float = opt(0.0, "Dropout before the classifier head.", MODEL, 0.0, 1.0)
    allow_partial_weights: bool = opt(False, "Go on when --weights PATH fills less than 90% of the backbone's "
                                      "tensors (another architecture); the rest keep their initialisation.", MODEL)
    # -- strategy
    strategy: str = opt("full", "Fine-tuning strategy: {strategies}.", STRATEGY)
    loss: str = opt("", "Loss terms added to the task loss, NAME[:WEIGHT] (weight 1 if left out), repeatable: "
                    "{losses}.", STRATEGY, repeat=True)
    layer_decay: float = opt(1.0, "Each earlier layer group gets this factor times the next group's LR.", STRATEGY, 0.0, 1.0)
    head_lr_mult: float = opt(1.0, "The head's LR is lr times this.", STRATEGY, 0.0)
    # -- optimisation
    optimizer: Literal["adamw", "sgd", "adam", "rmsprop"] = opt("adamw", "Optimizer.", OPTIM)
    lr: float = opt(1e-3, "Base learning rate.", OPTIM, 0.0)
    weight_decay: float = opt(0.01, "Weight decay (not applied to biases and norm layers).", OPTIM, 0.0)
    momentum: float = opt(0.9, "Momentum for sgd and rmsprop.", OPTIM, 0.0, 1.0)
    scheduler: Literal["cosine", "step", "onecycle", "inv", "none"] = opt("cosine", "LR schedule, stepped every optimizer step; inv: lr * (1 + 10 p)^-0.75 at progress p (domain adaptation's).", OPTIM)
    warmup_epochs: float = opt(0.0, "Linear LR warm-up length in epochs.", OPTIM, 0.0)
    label_smoothing: float = opt(0.0, "Label smoothing of the cross-entropy.", OPTIM, 0.0, 1.0)
    # -- training
    epochs: int = opt(10, "Training epochs.", TRAIN, 1)
    accumulate: int = opt(1, "Accumulate gradients over N batches.", TRAIN, 1)
    grad_clip: float = opt(0.0, "Clip the gradient norm to this value (0 = off).", TRAIN, 0.0)
    precision: Literal["auto", "32", "bf16", "16"] = opt("auto", "Numeric precision; auto = bf16 on a capable GPU, else 32.", TRAIN)
    early_stop: int = opt(0, "Stop after N epochs without improvement of --monitor (0 = off).", TRAIN, 0)
    monitor: Literal["val_loss", "val_accuracy"] = opt("val_loss", "Validation metric for the best checkpoint and early stopping.", TRAIN)
    seed: int = opt(0, "Random seed (same seed, same numbers on CPU).", TRAIN, 0, 2**31 - 1)
    accelerator: str = opt("auto", "Lightning accelerator: auto, cpu, gpu, mps.", TRAIN)
    devices: str = opt("auto", "Devices per node: auto, a count, or a list such as 0,1.", TRAIN)
    num_nodes: int = opt(1, "Nodes for distributed training (SLURM / torchrun).", TRAIN, 1)
    distributed: str = opt("auto", "Lightning strategy for several devices: auto, ddp, ddp_spawn, fsdp.", TRAIN)
    # -- output
    out: str | None = opt(None, "Run folder; default runs/<backbone>-<strategy>-<time>.", OUTPUT)
    progress: bool = opt(True, "Show progress bars.", OUTPUT)
    cache_dir: str | None = opt(None, "Feature cache folder; default $CVTRANSFER_CACHE or ~/.cache/cvtransfer.", OUTPUT)
    report: bool = opt(True, "Write report.html (curves, confusion, ROC, Grad-CAM, embedding...) at the end of the run.", OUTPUT)
    # -- choosing (rank, auto)
    backbones: str | None = opt(None, "Candidate backbones, comma-separated (auto's default: the --budget's list).", CHOOSE)
    budget: Literal["fast", "normal", "thorough"] = opt(
        "normal", "auto: candidates and training length: fast (3 small backbones, 0.5x --epochs), normal (5, 1x), "
        "thorough (8, 2x).", CHOOSE)
    validate: bool = opt(False, "rank: also train a logistic probe per candidate and report the rank correlation "
                         "(Kendall tau, weighted tau) of each score with its accuracy.", CHOOSE)
    rank_by: str = opt("logme", "The score that orders the candidates: {scores}.", CHOOSE)
    tiny_per_class: int = opt(10, "auto: fewer training images per class than this is tiny data (linear or l2sp).",
                              CHOOSE, 1)
    small_per_class: int = opt(100, "auto: fewer training images per class than this is small data.", CHOOSE, 1)
    small_images: int = opt(1000, "auto: fewer training images than this is small data.", CHOOSE, 1)
    # -- few-shot (cvtransfer fewshot, fewshot-eval)
    ways: int = opt(5, "fewshot-eval, --task fewshot: classes per evaluation episode.", FEWSHOT, 2)
    shots: str = opt("1,5", "fewshot-eval, --task fewshot: support images per class, one evaluation per value "
                     "(comma-separated).", FEWSHOT)
    queries: int = opt(15, "fewshot-eval, --task fewshot: query images per class and episode.", FEWSHOT, 1)
    episodes: int = opt(600, "fewshot-eval, --task fewshot: evaluation episodes per setting (the 95% interval "
                        "narrows as 1/sqrt of it).", FEWSHOT, 1)
    bn_stats: Literal["eval", "transductive"] = opt(
        "eval", "BatchNorm in few-shot evaluation: eval (running statistics) or transductive (each episode's own).",
        FEWSHOT)
    fewshot_methods: str = opt("protonet,protonet_cosine,simpleshot,matching,baselinepp,finetune",
                               "Few-shot classifiers on the backbone's features, comma-separated: {fewshot}; "
                               "fewshot classifies with the first.", FEWSHOT)
    # -- zero-shot and CLIP (cvtransfer zeroshot; the CLIP methods of fewshot, fewshot-eval)
    templates: str = opt("", "zeroshot, CLIP methods: a text file of prompt templates, one a line with {} for the "
                         "class name (default: CLIP's 7-template ensemble).", FEWSHOT)
    classes: str = opt("", "zeroshot, CLIP methods: the class names the prompts say, comma-separated, in the order of "
                       "the class folders (default: the folder names, _ read as a space).", FEWSHOT)
    wise_alpha: float = opt(0.5, "wiseft: weight of the fine-tuned head against the zero-shot one (0: zero-shot, "
                            "1: fine-tuned).", FEWSHOT, 0.0, 1.0)
    tip_alpha: float = opt(1.0, "tip_adapter: weight of the cache model's logits (0: zero-shot).", FEWSHOT, 0.0)
    tip_beta: float = opt(5.5, "tip_adapter: sharpness of the cache model's affinities.", FEWSHOT, 0.0)
    # -- adaptation (cvtransfer adapt; the source domain is ``data``)
    target: str | None = opt(None, "TGT_DIR: target images (class folders whose labels are used only for evaluation, a "
                             "train/ [test/] layout, or a plain folder without labels), or a feature file.", ADAPT)
    target_test: str | None = opt(None, "Labelled target test set; default TGT_DIR/test/, else the labelled target "
                                  "images themselves (the papers' transductive protocol).", ADAPT)
    method: str = opt("source-only", "Adaptation method: {methods}.", ADAPT)
    trade_off: float = opt(1.0, "Weight of the method's loss added to the source cross-entropy.", ADAPT, 0.0)
    mcc: float = opt(0.0, "Also add minimum class confusion with this weight to --method (0 = off).", ADAPT, 0.0)
    bottleneck_dim: int = opt(256, "adapt: width of the Linear+BN+ReLU bottleneck the losses align (0 = none).",
                              ADAPT, 0)
    iters_per_epoch: int = opt(500, "adapt: iterations per epoch, each on one source and one target batch of "
                               "--batch-size.", ADAPT, 1)
    discriminator_dim: int = opt(1024, "Hidden width of the domain discriminators (dann, cdan, adda).", ADAPT, 1)
    select_by: Literal["snd", "entropy", "dev", "none"] = opt(
        "entropy", "Keep the epoch that is best by an unsupervised target score (entropy, snd, dev), or the last "
        "(none). entropy is the default: it tracked the oracle best in our digits and Office-Caltech benchmarks.",
        ADAPT)
    selection_samples: int = opt(2000, "Unlabelled target images (a fixed sample) scored each epoch for --select-by.",
                                 ADAPT, 10)
    mlp_dim: int = opt(512, "Feature files: hidden width of the MLP that stands in for the backbone.", ADAPT, 1)
    shift_samples: int = opt(1000, "Images per domain for the shift measures (MMD, A-distance, Wasserstein).",
                             ADAPT, 4)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # a repeatable option (--loss) given as a list: "a,b"
            value = getattr(self, f.name)
            if f.metadata.get("repeat") and isinstance(value, (list, tuple)):
                setattr(self, f.name, ",".join(str(item) for item in value))
        validate(self)

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (validated)."""
        return from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML (re-runnable with ``--config``)."""
        from cvtransfer.io import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> Config:
        """Read a YAML config; ``overrides`` win over the file's values."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}".splitlines()[0]) from None
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path} must hold a mapping of option: value")
        return from_dict({**values, **overrides}, source=str(path))


if TYPE_CHECKING:
    class Config(CoreConfig):
        """Every setting of a cvtransfer run: the engine's and the plug-ins'."""

        def __init__(self, **settings: Any) -> None: ...

        def __getattr__(self, name: str) -> Any: ...
else:
    Config = dataclasses.make_dataclass("Config", plugin_fields(), bases=(CoreConfig,), namespace={
        "__doc__": "Every setting of a cvtransfer run. ``Config(data=\"data/\", backbone=\"resnet50\")``; the "
                   "plug-ins' settings (``l2sp_alpha``, ``freeze``, ...) are fields too.",
        "__module__": __name__})


def help_text(field_: dataclasses.Field[Any]) -> str:
    """A setting's help with the registered names filled in ("{strategies}" -> "full, linear, ...")."""
    from cvtransfer.few_shot.methods import FEWSHOT_METHODS
    from cvtransfer.losses import LOSSES, adaptation_methods, addable
    from cvtransfer.scores.transferability import SCORES
    from cvtransfer.strategies import STRATEGIES
    from cvtransfer.tasks import TASKS

    names = {"{fewshot}": FEWSHOT_METHODS.names(), "{tasks}": TASKS.names(), "{strategies}": STRATEGIES.names(), "{losses}": [n for n in LOSSES.names() if addable(n)],
             "{methods}": adaptation_methods(), "{scores}": SCORES.names()}
    text = str(field_.metadata["help"])
    for token, values in names.items():
        text = text.replace(token, ", ".join(values))
    return text


def field_types() -> dict[str, Any]:
    """Resolved type hints of the Config fields."""
    return typing.get_type_hints(Config)


def from_dict(values: dict[str, Any], source: str = "options") -> Config:
    """Build a Config from plain values (YAML, CLI), coercing types and rejecting unknown keys."""
    names = {f.name for f in dataclasses.fields(Config)}
    for key in values:
        if key not in names:
            raise unknown_name(f"option in {source}", key, names)
    hints = field_types()
    return Config(**{key: _coerce(key, hints[key], value) for key, value in values.items()})


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Convert YAML/CLI scalars to the field's type (int -> float, 32 -> '32', [a, b] -> 'a,b')."""
    if value is None:
        return None
    base = non_optional(hint)
    if base is str and isinstance(value, (list, tuple)):  # a repeatable option (--loss) given as a list
        return ",".join(str(item) for item in value)
    if typing.get_origin(base) is Literal or base is str:
        return str(value)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base in (float, int) and isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
        try:
            return base(value)
        except ValueError:
            return value  # validate() names the option and the value
    return value


def non_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0]
    return hint


MAX_INT = 2**31 - 1  # what the libraries below (islice, torch sizes) take without overflowing


def validate(config: CoreConfig) -> None:
    """Check every field's type, choices and bounds; raise ConfigError naming the option."""
    hints = field_types()
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        if value is None:
            if non_optional(hint) is hint:
                raise ConfigError(f"{flag} must be set")
            continue
        base = non_optional(hint)
        if typing.get_origin(base) is Literal:
            choices = typing.get_args(base)
            if value not in choices:
                raise ConfigError(f"{flag} must be one of {', '.join(choices)}, not '{value}'")
            continue
        if not _is_instance(value, base):
            raise ConfigError(f"{flag} must be a {base.__name__}, not {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number, not {value}")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            raise ConfigError(f"{flag} {value} is out of range: at most {MAX_INT}")
        low, high = f.metadata.get("min"), f.metadata.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ConfigError(f"{flag} must be {bounds}, not {value}")
    validate_names(config)
    validate_combinations(config)


def validate_combinations(config: CoreConfig) -> None:
    """Values that are fine alone but not together, or outside what a bound can say."""
    if config.lr <= 0:
        raise ConfigError(f"--lr must be > 0, not {config.lr}")
    if config.val_split + config.test_split >= 0.95:
        raise ConfigError(f"--val-split {config.val_split} and --test-split {config.test_split} leave less than 5% "
                          "of the data for training: lower them")
    devices = config.devices.replace(" ", "")
    if (devices != "auto" and not all(part.isdigit() for part in devices.split(",") if part)) or devices in ("", ","):
        raise ConfigError(f"--devices must be auto, a count such as 2, or a list such as 0,1, not '{config.devices}'")
    if devices.isdigit() and int(devices) == 0:
        raise ConfigError("--devices 0 trains on no device: give a count of 1 or more, a list such as 0,1, or auto")
    known = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "fsdp", "deepspeed", "dp", "single_device")
    if config.distributed not in known and not config.distributed.startswith(("ddp_", "deepspeed_", "fsdp_")):
        raise unknown_name("--distributed strategy", config.distributed, known)
    if config.accelerator not in ("auto", "cpu", "gpu", "cuda", "mps", "tpu"):
        raise unknown_name("--accelerator", config.accelerator, ("auto", "cpu", "gpu", "cuda", "mps", "tpu"))


def validate_names(config: CoreConfig) -> None:
    """Plug-in names must be registered: an unknown --strategy or --method fails when the Config is made.

    Imported here, not at the top: the registries' modules import this one.
    """
    from cvtransfer.losses import LOSSES, adaptation_methods, parse_loss_spec
    from cvtransfer.scores.transferability.base import SCORES
    from cvtransfer.strategies import STRATEGIES
    from cvtransfer.tasks import TASKS

    TASKS.get(config.task)
    STRATEGIES.get(config.strategy)
    if config.method not in adaptation_methods():
        if config.method not in LOSSES:
            raise unknown_name("adaptation method", config.method, adaptation_methods())
        raise ConfigError(f"--method {config.method} is not an adaptation method (it does not compare source and "
                          f"target): use one of {', '.join(adaptation_methods())}, or add it with --loss")
    parse_loss_spec(config.loss)
    SCORES.get(config.rank_by)


def _is_instance(value: Any, base: type) -> bool:
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, base)
