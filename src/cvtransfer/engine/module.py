"""The one LightningModule every strategy trains through."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from cvtransfer.config import Config
from cvtransfer.data.transforms import batch_mixer
from cvtransfer.engine.schedule import build_optimizer, build_scheduler


class TransferModule(pl.LightningModule):
    """Cross-entropy training of ``network`` with the strategy's param groups and penalty.

    ``network`` maps a batch's inputs to logits: the whole model, or only its head when the
    inputs are cached features.
    """

    def __init__(
        self,
        network: nn.Module,
        config: Config,
        num_classes: int,
        param_groups: Callable[[], list[dict[str, Any]]],
        regularizer: nn.Module | None = None,
        class_weights: torch.Tensor | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.network = network
        self.config = config
        self.regularizer = regularizer
        self._param_groups = param_groups
        self.lr = config.lr  # the LR finder rewrites this; groups keep their ratios to it
        self.criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=config.label_smoothing)
        self.mixer = batch_mixer(config.mixup, config.cutmix, num_classes)
        self.train_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.network(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        targets = y
        if self.mixer is not None:
            x, targets = self.mixer(x, y)
        logits = self(x)
        loss = self.criterion(logits, targets)
        if self.regularizer is not None:
            penalty = self.regularizer()
            self.log("train_penalty", penalty, on_step=False, on_epoch=True)
            loss = loss + penalty
        self.train_accuracy(logits.detach(), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        self.log("train_accuracy", self.train_accuracy, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_accuracy(logits, y)
        self.log("val_loss", self.criterion(logits, y), on_epoch=True, prog_bar=True, batch_size=len(y),
                 sync_dist=True)  # the best checkpoint is chosen on every rank's share, not rank 0's
        self.log("val_accuracy", self.val_accuracy, on_epoch=True, prog_bar=True, batch_size=len(y))

    def on_fit_start(self) -> None:
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)

    def configure_optimizers(self) -> dict[str, Any]:
        groups = self._param_groups()
        scale = self.lr / self.config.lr if self.config.lr > 0 else 1.0
        for group in groups:
            group["lr"] *= scale
        optimizer = build_optimizer(self.config, groups)
        scheduler = build_scheduler(self.config, optimizer, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
