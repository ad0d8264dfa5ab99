"""Gradual unfreezing (fastai's fine_tune, ULMFiT): the head alone first, then the backbone thaws.

Every parameter group exists in the optimizer from the first step and every parameter keeps
``requires_grad=True``; a frozen group's gradients are dropped after backward instead. So the
optimizer's groups never change (a resumed run restores them as saved, OneCycle and other schedules
run unbroken) and DDP, which registers the parameters that need gradients once at start, keeps
every replica in sync when groups thaw. The frozen set is a function of the epoch, re-applied at the
start of each epoch, so resuming restores it too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from cvtransfer.models.transfer_model import TransferModel
from cvtransfer.options import STRATEGY, opt
from cvtransfer.strategies.base import STRATEGIES, Strategy, layerwise_param_groups

log = logging.getLogger(__name__)


def frozen_groups_at(epoch: int, num_groups: int, freeze_epochs: int, unfreeze_every: int) -> range:
    """Backbone groups frozen during ``epoch``: all of them first, then fewer from the top down."""
    if epoch < freeze_epochs:
        return range(num_groups)
    if unfreeze_every == 0:
        return range(0)
    thawed = 1 + (epoch - freeze_epochs) // unfreeze_every
    return range(max(0, num_groups - thawed))


class GradualUnfreezing(Callback):
    """Applies the frozen set for the current epoch and drops the gradients of frozen groups."""

    def __init__(self, model: TransferModel, freeze_epochs: int, unfreeze_every: int) -> None:
        self.model = model
        self.freeze_epochs = freeze_epochs
        self.unfreeze_every = unfreeze_every

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        frozen = frozen_groups_at(trainer.current_epoch, self.model.num_groups, self.freeze_epochs,
                                  self.unfreeze_every)
        if frozenset(frozen) != self.model.frozen_groups:
            log.info("epoch %d: %d of %d backbone groups frozen", trainer.current_epoch, len(frozen),
                     self.model.num_groups)
        self.model.set_frozen_groups(frozen)

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for group in self.model.frozen_groups:
            for param in self.model.group_parameters(group):
                param.grad = None


@dataclass
class GradualOptions:
    """When the backbone thaws, and at which LR."""

    freeze_epochs: int = opt(1, "gradual: epochs training the head only.", STRATEGY, 0)
    unfreeze_every: int = opt(0, "gradual: thaw one more layer group every N epochs, top first (0 = all at once).",
                              STRATEGY, 0)
    unfreeze_lr_mult: float = opt(0.1, "gradual: LR of thawed backbone groups, relative to lr.", STRATEGY, 0.0)


@STRATEGIES.register("gradual")
class GradualUnfreezingStrategy(Strategy):
    """Head only for ``freeze_epochs``, then thaw all groups, or one more every ``unfreeze_every`` epochs."""

    name = "gradual"
    options = GradualOptions

    def setup(self) -> None:
        self.model.set_frozen_groups(range(self.model.num_groups))

    def param_groups(self) -> list[dict[str, Any]]:
        return layerwise_param_groups(self.model, self.config, backbone_lr_mult=self.config.unfreeze_lr_mult)

    def callbacks(self) -> list[Callback]:
        return [GradualUnfreezing(self.model, self.config.freeze_epochs, self.config.unfreeze_every)]
