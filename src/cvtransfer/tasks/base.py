"""What a task is: what is predicted and how it is judged.

A :class:`Task` is registered by name in ``TASKS`` and chosen with ``--task``. The engine, the run
folder, evaluation, prediction and the report ask the task instead of assuming classes:

- :meth:`Task.build_model`: the backbone (or an MLP on feature files) with the task's head;
- :meth:`Task.criterion`: the task loss the engine minimises on labelled batches;
- :meth:`Task.metric`: the torchmetrics metric logged as ``train_<metric_name>`` / ``val_<metric_name>``;
- :meth:`Task.evaluate`: metrics.json from the model's outputs on the evaluation split;
- :meth:`Task.prediction_rows`: what ``predict`` writes per input;
- :meth:`Task.evaluate_run`, :meth:`Task.predict_run`: a finished run's evaluation and prediction when the
  task reads its own data and writes pictures (segmentation's masks, detection's boxes);
- ``run_files`` and ``report_sections``: what the run folder and report.html hold.

``classification`` is the first task; segmentation and detection are next, one file each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torchmetrics import Metric

from cvtransfer.registry import Registry

if TYPE_CHECKING:
    from pathlib import Path

    from cvtransfer.config import Config
    from cvtransfer.models.factory import BuiltModel
    from cvtransfer.run import Run

TASKS: Registry[type[Task]] = Registry("task")
ReportSection = tuple[str, str, Callable[[], Any]]  # report.html's section: id, title, what builds its HTML


class Task:
    """Base of every task. Subclasses fill in every method and register in ``TASKS``."""

    name: ClassVar[str] = ""
    metric_name: ClassVar[str] = ""  # history.csv's train_<metric_name>, val_<metric_name>
    run_files: ClassVar[tuple[str, ...]] = ()  # what a finished run folder holds besides config, history, model
    report_sections: ClassVar[tuple[str, ...]] = ()  # report.html's section ids, in page order
    options: ClassVar[type | None] = None  # a dataclass of opt() fields: this task's settings
    # (metric, "min" or "max") that picks best.ckpt instead of --monitor; None: --monitor
    monitor: ClassVar[tuple[str, str] | None] = None
    train_metric: ClassVar[bool] = True  # whether train_<metric_name> is measured on the training batches
    episodic: ClassVar[bool] = False  # whether a batch is a few-shot episode (the engine's episodic stream)

    def check_options(self, config: Config) -> None:
        """Refuse, in one line, a setting this task cannot honour (before anything is read); the default: none."""

    def discover_splits(self, config: Config) -> Any:
        """The splits of ``config.data`` when the task reads its own kind of data (masks, boxes) or splits it its
        own way (few-shot's by class); None (the default): class folders split by image."""
        return None

    def read_splits(self, values: dict[str, Any]) -> Any:
        """A saved splits.json's content as the task's splits (the default: class-labelled images)."""
        from cvtransfer.data.folders import DatasetSplits

        return DatasetSplits.from_dict(values)

    def describe_splits(self, splits: Any) -> str:
        """One line on the splits for the log (the default: classes and images per split)."""
        return (f"{len(splits.classes)} classes; {len(splits.train)} train, {len(splits.val)} val, "
                f"{len(splits.test)} test images")

    def complete_model(self, built: BuiltModel, splits: Any, config: Config, device: torch.device) -> None:
        """Finish the trained model on ``device`` before the run folder is written (few-shot's prototype head);
        the default: nothing."""

    def settle_options(self, config: Config, splits: Any) -> Config:
        """``config`` with the options that depend on the training data settled (detection's --anchor-sizes
        auto); the default: ``config`` as it is."""
        return config

    def build_model(self, config: Config, classes: list[str], weights: str, bottleneck_dim: int = 0,
                    feature_width: int | None = None) -> BuiltModel:
        """The network: ``config.backbone`` with ``weights`` (or, given ``feature_width``, an MLP on
        feature rows), adapt's bottleneck of ``bottleneck_dim`` (0: none), and the task's head."""
        raise NotImplementedError

    def network_loss(self, network: nn.Module, x: Any, y: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        """The task loss of a training batch when the network computes it itself (torchvision's detectors), and
        its named parts; None (the default): the engine computes ``criterion(network(x), y)``."""
        return None

    def loss_parts(self, config: Config) -> tuple[str, ...]:
        """The names of :meth:`network_loss`'s parts for ``config`` (history.csv's ``train_<part>`` columns)."""
        return ()

    def network_outputs(self, network: nn.Module, x: Any, y: Any) -> tuple[Any, torch.Tensor | None] | None:
        """(what the metric reads, the batch's loss or None) of a validation batch when they are not logits
        (detectors' boxes); None (the default): the logits and ``criterion(logits, y)``."""
        return None

    def criterion(self, config: Config, class_weights: torch.Tensor | None = None) -> nn.Module:
        """The training loss of a batch: ``criterion(outputs, targets)``."""
        raise NotImplementedError

    def sample_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The unweighted loss of each sample (adapt's val_loss, and DEV's importance-weighted risk)."""
        raise NotImplementedError

    def metric(self, num_classes: int) -> Metric:
        """A fresh torchmetrics metric for one split (train, val, target test)."""
        raise NotImplementedError

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        """The model's outputs as what evaluation and prediction read (class probabilities, ...)."""
        raise NotImplementedError

    def evaluate(self, probs: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict[str, Any]:
        """metrics.json's content for the outputs ``probs`` of samples whose truth is ``targets``."""
        raise NotImplementedError

    def summary(self, metrics: dict[str, Any]) -> str:
        """One line for the console: the split and its headline metrics."""
        raise NotImplementedError

    def prediction_rows(self, paths: list[str], probs: torch.Tensor, classes: list[str],
                        top_k: int = 1) -> list[dict[str, Any]]:
        """predictions.csv's rows, one per input."""
        raise NotImplementedError

    def evaluate_run(self, run: Run, data: str | Path | None, out: Path,
                     device: torch.device) -> tuple[dict[str, Any], Any] | None:
        """(metrics, confusion matrix to draw or None) of a finished ``run`` on ``data`` (None: its own test
        split) on ``device``, pictures written beside ``out``, when the task reads its own data (masks, boxes); None (the
        default): the run classifies the image folders' samples and calls :meth:`evaluate`."""
        return None

    def predict_run(self, run: Run, files: list[str], out: Path, device: torch.device) -> list[dict[str, Any]] | None:
        """predictions.csv's rows for ``files``, with what the task writes beside ``out`` (masks, drawn boxes);
        None (the default): :meth:`prediction_rows` of the run's probabilities."""
        return None

    def report_builders(self, run: Run, title: str, seconds: float | None) -> list[ReportSection] | None:
        """report.html's sections (id, title, builder) made from the run folder's own files, config and
        diagnosis aside; None (the default): the report predicts the test split and builds its own."""
        return None

    def method_label(self, config: Config) -> str | None:
        """How a run was trained, for reports and comparisons; None (the default): the strategy and method."""
        return None


def get_task(name: str) -> Task:
    """An instance of the task registered as ``name``."""
    return TASKS.get(name)()
