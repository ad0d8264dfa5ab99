"""What each training command accepts: its defaults, its run folder's name, and the options it refuses.

An option a command cannot honour is refused here in one line, before any run folder exists,
never silently ignored.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvtransfer.errors import ConfigError
from cvtransfer.losses import LOSSES, parse_loss_spec
from cvtransfer.strategies import get_strategy

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
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{prefix}{config.backbone.replace('/', '_')}-{config.strategy}-{stamp}"


def default_adapt_dir(config: Config) -> Path:
    """runs/adapt-<method>-<backbone>-<strategy>-<time> when ``--out`` is not given."""
    return default_run_dir(config, prefix=f"adapt-{config.method}-")


def adaptation_config(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` over :data:`ADAPT_DEFAULTS` (what the user gives wins)."""
    return {**ADAPT_DEFAULTS, **values}


def check_fit_options(config: Config) -> None:
    """Refuse, in one line, what ``fit`` cannot honour: a loss term that needs target images."""
    for name, _ in parse_loss_spec(config.loss):
        if LOSSES.get(name).needs_target:
            raise ConfigError(f"--loss {name} compares source and target images: use cvtransfer adapt with --target "
                              "(fit has labelled images only)")


def check_adapt_options(config: Config) -> None:
    """Refuse, in one line, an option of ``config`` that adaptation would otherwise ignore."""
    for name, (default, reason) in NOT_FOR_ADAPT.items():
        if getattr(config, name) != default:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} does not apply to adapt ({reason}); leave it out")
    if get_strategy(config.strategy).uses_feature_cache:
        raise ConfigError(f"--strategy {config.strategy} trains on cached features, but adaptation must train "
                          "the features: use full, partial, gradual or l2sp")


def check_options(config: Config) -> None:
    """The checks of the command that trains ``config``: adapt when it names a target, else fit."""
    if config.target is not None:
        check_adapt_options(config)
    else:
        check_fit_options(config)
