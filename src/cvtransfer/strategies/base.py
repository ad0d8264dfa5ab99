"""What a fine-tuning strategy is: which parameters train, at which learning rate, with which penalty."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from lightning.pytorch import Callback
from torch import nn

from cvtransfer.models.transfer_model import TransferModel
from cvtransfer.registry import Registry

if TYPE_CHECKING:
    from cvtransfer.config import Config

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


class Strategy:
    """Base strategy: everything trains, every group at ``lr``. Subclasses override the hooks."""

    name: ClassVar[str] = ""
    uses_feature_cache: ClassVar[bool] = False  # train the head on cached backbone features
    options: ClassVar[type | None] = None  # a dataclass of opt() fields: this strategy's settings
    terms: ClassVar[tuple[tuple[str, float], ...]] = ()  # loss terms (names in LOSSES, weights) it adds

    def __init__(self, model: TransferModel, config: Config) -> None:
        self.model = model
        self.config = config

    def setup(self) -> None:
        """Freeze what does not train (called once, before the optimizer is built)."""

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups, each with its own ``lr`` (never a scale a scheduler could ignore)."""
        return layerwise_param_groups(self.model, self.config)

    def loss_terms(self) -> list[tuple[str, float]]:
        """Loss terms (registered names in ``LOSSES``, with weights) the strategy adds to the task loss."""
        return list(self.terms)

    def callbacks(self) -> list[Callback]:
        """Lightning callbacks the strategy needs (a thawing schedule, ...)."""
        return []


def get_strategy(name: str) -> type[Strategy]:
    return STRATEGIES.get(name)


def _no_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, norm scales, tokens and embeddings (1-D) are not weight-decayed (timm's convention)."""
    return param.ndim <= 1 or name.endswith(".bias")


def layerwise_param_groups(
    model: TransferModel, config: Config, backbone_lr_mult: float = 1.0, weight_decay: float | None = None
) -> list[dict[str, Any]]:
    """One group per layer group (and decay/no-decay split) with discriminative learning rates.

    Group ``i`` of ``n`` (stem = 0) gets ``lr * backbone_lr_mult * layer_decay ** (n - i)``; the
    head (and the bottleneck, if any) gets ``lr * head_lr_mult``. Parameters that do not require gradients are left out.
    """
    decay = config.weight_decay if weight_decay is None else weight_decay
    named = dict(model.backbone.named_parameters())
    groups: list[dict[str, Any]] = []
    n = model.num_groups
    for index, names in enumerate(model.layer_groups):
        lr = config.lr * backbone_lr_mult * config.layer_decay ** (n - index)
        groups += _split_decay(f"group{index}", [(k, named[k]) for k in names], lr, decay)
    head_lr = config.lr * config.head_lr_mult
    groups += _split_decay("bottleneck", list(model.bottleneck.named_parameters()), head_lr, decay)
    groups += _split_decay("head", list(model.head.named_parameters()), head_lr, decay)
    return [g for g in groups if g["params"]]


def _split_decay(name: str, params: list[tuple[str, nn.Parameter]], lr: float, decay: float) -> list[dict[str, Any]]:
    trainable = [(k, p) for k, p in params if p.requires_grad]
    return [
        {"name": name, "params": [p for k, p in trainable if not _no_decay(k, p)], "lr": lr, "weight_decay": decay},
        {"name": f"{name}.no_decay", "params": [p for k, p in trainable if _no_decay(k, p)], "lr": lr,
         "weight_decay": 0.0},
    ]
