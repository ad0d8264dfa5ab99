"""The one LightningModule: the task loss on labelled batches plus the run's loss terms.

Every run trains through :class:`TransferModule`, whatever its stream:

    loss = task_loss(head(f), y) + sum_k weight_k * L_k(LossBatch(f, logits, y, p [, f_t, logits_t]))

A labelled stream gives ``(x, y)`` batches; a paired stream (``adapt``) gives
``{"source": (x_s, y_s), "target": (x_t, _)}`` and the terms then see the target's features and
logits too. p = step / total steps (the progress the DANN ramp and the inv schedule follow).
Validation reads up to three loaders: 0 the labelled validation split (val_loss, val_<metric>),
1 a fixed sample of the unlabelled target images (the unsupervised selection scores) and 2 the
labelled target test set when there is one (target_<metric>, for reporting only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from torch import nn

from cvtransfer.data.transforms import batch_mixer
from cvtransfer.engine.schedule import build_optimizer, build_scheduler
from cvtransfer.errors import TrainingDiverged
from cvtransfer.losses.base import LossBatch, LossTerms
from cvtransfer.models.transfer_model import TransferModel
from cvtransfer.scores.selection import SELECTION_SCORES, ScoreInputs, compute_scores
from cvtransfer.tasks.base import Task

if TYPE_CHECKING:
    from cvtransfer.config import Config

VALIDATION, TARGET_SELECT, TARGET_TEST = 0, 1, 2
# Checkpoint keys of earlier versions (a fit's "regularizer", adapt's "losses") and where they live now.
_RENAMED_KEYS = {"regularizer.": "loss_terms.terms.l2sp.", "losses.terms.": "loss_terms.terms."}


def history_columns(task: Task, loss_terms: LossTerms, paired: bool, parts: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The history.csv columns of a run besides the losses: the task's metric, the loss terms' columns, ..."""
    columns = [*([f"train_{task.metric_name}"] if task.train_metric else []), f"val_{task.metric_name}",
               *(f"train_{name}" for name in (*parts, *loss_terms.metric_names))]
    if paired:
        columns = ["train_ce", *columns, f"target_{task.metric_name}",
                   *(f"val_{name}" for name in SELECTION_SCORES)]
    return tuple(columns)


class TransferModule(pl.LightningModule):
    """Trains ``network`` on the task loss plus ``loss_terms``, with the strategy's param groups.

    ``network`` is the model, or only its head (``nn.Sequential(dropout, head)``) when the inputs
    are cached features; ``param_groups`` builds the optimizer's groups.
    """

    def __init__(
        self,
        network: nn.Module,
        config: Config,
        task: Task,
        num_classes: int,
        param_groups: Callable[[], list[dict[str, Any]]],
        loss_terms: LossTerms | None = None,
        class_weights: torch.Tensor | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.network = network
        self.config = config
        self.task = task
        self.loss_terms = loss_terms if loss_terms is not None else LossTerms({}, {})
        self._param_groups = param_groups
        self.lr = config.lr  # the LR finder rewrites this; groups keep their ratios to it
        self.criterion = task.criterion(config, class_weights)
        self.mixer = batch_mixer(config.mixup, config.cutmix, num_classes)
        self.train_metric = task.metric(num_classes)
        self.val_metric = task.metric(num_classes)
        self.target_metric = task.metric(num_classes)
        self.channels_last = channels_last
        self._seen: dict[int, list[dict[str, torch.Tensor]]] = {}

    # -- the network's two halves: features, then the head
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.network.embed(x) if isinstance(self.network, TransferModel) else x

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.network.classify(features) if isinstance(self.network, TransferModel) else self.network(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))

    @property
    def progress(self) -> float:
        """Fraction of the training steps done, in [0, 1]."""
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
        return min(1.0, self.global_step / total) if total and total != float("inf") else 0.0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        paired = isinstance(batch, Mapping)
        x, y = batch["source"] if paired else batch
        own = None if paired else self.task.network_loss(self.network, x, y)
        size = len(y)
        if own is not None:  # a detector computes its losses itself; no features, no logits
            task_loss, parts = own
            for name, value in parts.items():
                self.log(f"train_{name}", value.detach(), on_step=False, on_epoch=True, batch_size=size)
            empty = task_loss.new_empty(0)
            step = LossBatch(empty, empty, empty, self.progress)
            logits = None
        else:
            task_loss, logits, step = self._classify_batch(batch, x, y, paired)
        loss = task_loss
        if len(self.loss_terms):
            extra, metrics = self.loss_terms(step)
            loss = task_loss + extra
            for name, value in metrics.items():
                self.log(f"train_{name}", value, on_step=False, on_epoch=True, batch_size=size)
        if not torch.isfinite(loss.detach()):  # before the epoch's checkpoint overwrites the last good one
            kept = ("the last finished epoch's checkpoint is kept (checkpoints/last.ckpt)" if self.current_epoch
                    else "no epoch had finished, so there is nothing to keep")
            raise TrainingDiverged(f"the training loss became {float(loss.detach())} at epoch {self.current_epoch + 1}, "
                                   f"step {self.global_step + 1}: lower --lr (now {self.lr:g}) or set --grad-clip; {kept}")
        if paired:
            self.log("train_ce", task_loss.detach(), on_step=False, on_epoch=True, batch_size=size)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True)
        if logits is not None and self.task.train_metric:
            self.train_metric(logits.detach(), y)
            self.log(f"train_{self.task.metric_name}", self.train_metric, on_step=False, on_epoch=True,
                     batch_size=size)
        return loss

    def _classify_batch(self, batch: Any, x: torch.Tensor, y: torch.Tensor,
                        paired: bool) -> tuple[torch.Tensor, torch.Tensor, LossBatch]:
        """(task loss, logits, what the loss terms read) of a batch the engine runs through embed and classify."""
        targets = y
        if self.mixer is not None:
            x, targets = self.mixer(x, y)
        if paired:
            assert isinstance(self.network, TransferModel), "paired batches need the whole model"
            x_t = batch["target"][0]
            if self.channels_last and x.ndim == 4:
                x, x_t = (v.contiguous(memory_format=torch.channels_last) for v in (x, x_t))
            features, target_features = self.loss_terms.features(self.network, x, x_t)
            logits, target_logits = self.classify(features), self.classify(target_features)
        else:
            features, target_features, target_logits = self.embed(x), None, None
            logits = self.classify(features)
        task_loss: torch.Tensor = self.criterion(logits, targets)
        return task_loss, logits, LossBatch(features, logits, y, self.progress, target_features, target_logits)

    def validation_step(self, batch: tuple[Any, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        name = self.task.metric_name
        own = self.task.network_outputs(self.network, x, y)
        if own is not None:  # a detector's boxes (labelled validation only) and its own loss
            outputs, own_loss = own
            self.val_metric.update(outputs, y)
            if own_loss is not None:
                self.log("val_loss", own_loss, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True,
                         add_dataloader_idx=False)
            self.log(f"val_{name}", self.val_metric, on_epoch=True, prog_bar=True, batch_size=len(y),
                     add_dataloader_idx=False)
            return
        features = self.embed(x)
        logits = self.classify(features)
        if dataloader_idx == VALIDATION:
            self.val_metric(logits, y)
            # adapt's val_loss is the task's plain per-sample loss on the source split (DEV reads it too); fit's
            # is the training criterion (class weights, label smoothing), which picks its best epoch
            plain = self.task.sample_losses(logits, y) if self.config.target is not None else None
            val_loss = plain.mean() if plain is not None else self.criterion(logits, y)
            # the best checkpoint is chosen on every rank's share, not rank 0's
            self.log("val_loss", val_loss, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True,
                     add_dataloader_idx=False)
            self.log(f"val_{name}", self.val_metric, on_epoch=True, prog_bar=True, batch_size=len(y),
                     add_dataloader_idx=False)
            if plain is not None:  # DEV reads the source validation features and losses
                self._keep(VALIDATION, features=features, losses=plain)
        elif dataloader_idx == TARGET_SELECT:
            self._keep(TARGET_SELECT, features=features, probs=self.task.probabilities(logits))
        else:
            self.target_metric(logits, y)
            self.log(f"target_{name}", self.target_metric, on_epoch=True, prog_bar=True, batch_size=len(y),
                     add_dataloader_idx=False)

    def _keep(self, loader: int, **tensors: torch.Tensor) -> None:
        self._seen.setdefault(loader, []).append({k: v.detach().float().cpu() for k, v in tensors.items()})

    def _joined(self, loader: int) -> dict[str, torch.Tensor]:
        """What :meth:`_keep` kept of ``loader`` this epoch, each tensor concatenated over batches ({} if none)."""
        parts = self._seen.pop(loader, [])
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]} if parts else {}

    def on_validation_epoch_end(self) -> None:
        """The unsupervised selection scores of this epoch's model, from what validation kept."""
        source, target = self._joined(VALIDATION), self._joined(TARGET_SELECT)
        self._seen.clear()
        if not source or not target:
            return
        scores = compute_scores(ScoreInputs(target_probs=target["probs"], target_features=target["features"],
                                            source_features=source["features"], source_losses=source["losses"],
                                            seed=self.config.seed))
        for name, value in scores.items():
            self.log(f"val_{name}", value, on_epoch=True, batch_size=1, sync_dist=True)

    def on_fit_start(self) -> None:
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints of earlier versions kept the L2-SP penalty and the DA losses under other names."""
        state = checkpoint.get("state_dict", {})
        for key in list(state):
            for old, new in _RENAMED_KEYS.items():
                if key.startswith(old):
                    state[new + key[len(old):]] = state.pop(key)

    def configure_optimizers(self) -> Any:
        groups = self._param_groups()
        scale = self.lr / self.config.lr if self.config.lr > 0 else 1.0
        for group in groups:
            group["lr"] *= scale
        optimizer = build_optimizer(self.config, groups)
        scheduler = build_scheduler(self.config, optimizer, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
