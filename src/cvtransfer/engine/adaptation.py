"""The one LightningModule, trained on a source batch and a target batch per step.

:class:`AdaptationModule` is :class:`TransferModule` (same cross-entropy, optimizer, schedule,
checkpoints and history) whose step reads a pair of batches and adds the method's loss:

    loss = CE(head(f_s), y_s) + trade_off * L_method(f_s, f_t, logits_s, logits_t, p) [+ mcc * L_mcc]

with p = step / total steps (the progress the DANN ramp and the inv schedule follow). Validation
reads up to three loaders: 0 the labelled source validation split (val_loss, val_accuracy),
1 a fixed sample of the unlabelled target images (the unsupervised selection scores val_snd,
val_entropy, val_dev) and 2 the labelled target test set when there is one (target_accuracy,
for reporting only: nothing is chosen by it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from cvtransfer.losses.base import DomainLosses
from cvtransfer.scores.selection import SELECTION_SCORES, ScoreInputs, compute_scores
from cvtransfer.config import Config
from cvtransfer.engine.module import TransferModule
from cvtransfer.models.transfer_model import TransferModel

SOURCE_VAL, TARGET_SELECT, TARGET_TEST = 0, 1, 2


def history_columns(losses: DomainLosses) -> tuple[str, ...]:
    """The history.csv columns the adaptation engine adds to fit's."""
    return ("train_ce", *(f"train_{name}" for name in losses.metric_names), "target_accuracy",
            *(f"val_{name}" for name in SELECTION_SCORES))


class AdaptationModule(TransferModule):
    """Source cross-entropy plus the domain losses, on (source, target) batch pairs."""

    def __init__(self, model: TransferModel, config: Config, num_classes: int,
                 param_groups: Callable[[], list[dict[str, Any]]], losses: DomainLosses,
                 regularizer: torch.nn.Module | None = None, class_weights: torch.Tensor | None = None) -> None:
        super().__init__(model, config, num_classes, param_groups, regularizer, class_weights)
        self.losses = losses
        self.target_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self._seen: dict[int, list[dict[str, torch.Tensor]]] = {}

    @property
    def model(self) -> TransferModel:
        return self.network  # type: ignore[return-value]

    @property
    def progress(self) -> float:
        """Fraction of the training steps done, in [0, 1]."""
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
        return min(1.0, self.global_step / total) if total and total != float("inf") else 0.0

    def training_step(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]], batch_idx: int) -> torch.Tensor:
        (x_s, y_s), (x_t, _) = batch["source"], batch["target"]
        f_s, f_t = self.losses.features(self.model, x_s, x_t)
        logits_s, logits_t = self.model.classify(f_s), self.model.classify(f_t)
        classification = self.criterion(logits_s, y_s)
        transfer, metrics = self.losses(f_s, f_t, logits_s, logits_t, self.progress)
        loss = classification + transfer
        if self.regularizer is not None:  # the strategy's penalty (l2sp), as in fit
            penalty = self.regularizer()
            self.log("train_penalty", penalty, on_step=False, on_epoch=True, batch_size=len(y_s))
            loss = loss + penalty
        self.train_accuracy(logits_s.detach(), y_s)
        size = len(y_s)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True)
        self.log("train_accuracy", self.train_accuracy, on_step=False, on_epoch=True, batch_size=size)
        self.log("train_ce", classification.detach(), on_step=False, on_epoch=True, batch_size=size)
        for name, value in metrics.items():
            self.log(f"train_{name}", value, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int,
                        dataloader_idx: int = 0) -> None:
        x, y = batch
        features = self.model.embed(x)
        logits = self.model.classify(features)
        if dataloader_idx == SOURCE_VAL:
            losses = F.cross_entropy(logits, y, reduction="none")
            self.val_accuracy(logits, y)
            self.log("val_loss", losses.mean(), on_epoch=True, prog_bar=True, batch_size=len(y),
                     add_dataloader_idx=False)
            self.log("val_accuracy", self.val_accuracy, on_epoch=True, batch_size=len(y), add_dataloader_idx=False)
            self._keep(SOURCE_VAL, features=features, losses=losses)
        elif dataloader_idx == TARGET_SELECT:
            self._keep(TARGET_SELECT, features=features, probs=logits.softmax(dim=1))
        else:
            self.target_accuracy(logits, y)
            self.log("target_accuracy", self.target_accuracy, on_epoch=True, prog_bar=True, batch_size=len(y),
                     add_dataloader_idx=False)

    def _keep(self, loader: int, **tensors: torch.Tensor) -> None:
        self._seen.setdefault(loader, []).append({k: v.detach().float().cpu() for k, v in tensors.items()})

    def _joined(self, loader: int) -> dict[str, torch.Tensor]:
        """What :meth:`_keep` kept of ``loader`` this epoch, each tensor concatenated over batches ({} if none)."""
        parts = self._seen.pop(loader, [])
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]} if parts else {}

    def on_validation_epoch_end(self) -> None:
        """The unsupervised selection scores of this epoch's model, from what validation kept."""
        source, target = self._joined(SOURCE_VAL), self._joined(TARGET_SELECT)
        self._seen.clear()
        if not source or not target:
            return
        scores = compute_scores(ScoreInputs(target_probs=target["probs"], target_features=target["features"],
                                            source_features=source["features"], source_losses=source["losses"],
                                            seed=self.config.seed))
        for name, value in scores.items():
            self.log(f"val_{name}", value, on_epoch=True, batch_size=1, sync_dist=True)
