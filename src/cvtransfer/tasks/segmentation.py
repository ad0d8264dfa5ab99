"""Semantic segmentation: a class per pixel, judged by mIoU from one confusion matrix over the split.

``cvtransfer fit DATA_DIR --task segmentation --decoder unet|fpn|deeplabv3plus|fcn``: the backbone's
feature maps under a decoder (:mod:`cvtransfer.models.segmentation`), images and masks paired by
stem (:mod:`cvtransfer.data.masks`), every strategy as for classification (``linear``: the decoder
on a frozen encoder). Training crops squares of ``--image-size``; evaluation resizes the shorter side
to ``--image-size``, pads to the encoder's stride, crops the logits back and scales them to the mask's
own size, so metrics.json counts every pixel of the original masks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torchmetrics import Metric

from cvtransfer.evaluation.segmentation import MeanIoU
from cvtransfer.models.factory import BuiltModel
from cvtransfer.options import DATA, MODEL, opt
from cvtransfer.tasks.base import TASKS, ReportSection, Task

if TYPE_CHECKING:
    from pathlib import Path

    from cvtransfer.config import Config
    from cvtransfer.run import Run

IGNORE = -100  # what the ignored pixels (--ignore-index, padding) become in a batch: PyTorch's own ignore value


def ignoring_collate(ignore_index: int, stride: int = 32) -> Callable[[list[Any]], tuple[torch.Tensor, torch.Tensor]]:
    """Batches padded to a multiple of ``stride`` (:func:`pad_collate`), every ignored pixel set to IGNORE.

    A partial of a module-level function, not a closure: DataLoader workers started by spawn pickle it."""
    from cvtransfer.data.masks import pad_collate

    return functools.partial(_collate_ignoring, pad_collate(stride, ignore_index), ignore_index)


def _collate_ignoring(pad: Callable[[list[Any]], tuple[torch.Tensor, torch.Tensor]], ignore_index: int,
                      items: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = pad(items)
    return images, masks.masked_fill(masks == ignore_index, IGNORE)


@dataclass
class SegmentationOptions:
    decoder: Literal["unet", "fpn", "deeplabv3plus", "fcn"] = opt(
        "unet", "segmentation: the decoder over the backbone's feature maps (segmentation_models_pytorch's U-Net, "
        "FPN, DeepLabV3+; torchvision's FCN head, the one a ViT can take).", MODEL)
    ignore_index: int = opt(255, "segmentation: the mask value of unlabelled pixels, left out of the loss and the "
                            "metrics (CamVid: 11).", DATA, 0)
    classes_file: str = opt("", "Class names, one a line ('name R G B' for colour masks); segmentation's default: "
                            "DATA_DIR/classes.txt; fewshot-eval: the classes evaluated (default: all).", DATA)


@TASKS.register("segmentation")
class Segmentation(Task):
    """Pixel-wise cross-entropy (ignored pixels left out) on a decoder over the backbone's feature maps."""

    name = "segmentation"
    metric_name = "miou"
    run_files = ("classes.json", "metrics.json", "per_class_iou.png", "confusion.png", "examples.png", "curves.png")
    report_sections = ("summary", "config", "data", "curves", "per-class-iou", "confusion", "examples", "diagnosis")
    options = SegmentationOptions

    def discover_splits(self, config: Config) -> Any:
        from cvtransfer.data.masks import discover_segmentation

        assert config.data is not None
        return discover_segmentation(config.data, config.val_split, config.test_split, config.seed,
                                     config.ignore_index, config.classes_file or None, config.max_image_pixels)

    def read_splits(self, values: dict[str, Any]) -> Any:
        from cvtransfer.data.masks import SegmentationSplits

        return SegmentationSplits.from_dict(values)

    def describe_splits(self, splits: Any) -> str:
        return (f"{len(splits.classes)} classes; {len(splits.train)} train, {len(splits.val)} val, {len(splits.test)} "
                f"test images with masks (ignore index {splits.ignore_index})")

    def build_model(self, config: Config, classes: list[str], weights: str, bottleneck_dim: int = 0,
                    feature_width: int | None = None) -> BuiltModel:
        from cvtransfer.models.factory import build_segmentation_model

        return build_segmentation_model(config.backbone, weights, classes, config.decoder, config.image_size,
                                        config.seed, config.allow_partial_weights)

    def criterion(self, config: Config, class_weights: torch.Tensor | None = None) -> nn.Module:
        return nn.CrossEntropyLoss(weight=class_weights, ignore_index=IGNORE, label_smoothing=config.label_smoothing)

    def sample_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pixels = nn.functional.cross_entropy(outputs, targets, ignore_index=IGNORE, reduction="none")
        counted = (targets != IGNORE).flatten(1).sum(1).clamp(min=1)
        return pixels.flatten(1).sum(1) / counted

    def metric(self, num_classes: int) -> Metric:
        return MeanIoU(num_classes, ignore_index=IGNORE)

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().softmax(dim=1)

    def evaluate(self, probs: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict[str, Any]:
        from cvtransfer.evaluation.segmentation import confusion_matrix, segmentation_metrics

        return segmentation_metrics(confusion_matrix(probs.argmax(1), targets, len(classes), IGNORE), classes)

    def summary(self, metrics: dict[str, Any]) -> str:
        def show(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4f}"

        return (f"{metrics['split']} mIoU {show(metrics['miou'])}, pixel accuracy {show(metrics['pixel_accuracy'])}, "
                f"mean class accuracy {show(metrics['mean_class_accuracy'])} ({metrics['num_images']} images)")

    def evaluate_run(self, run: Run, data: str | Path | None, out: Path,
                     device: torch.device) -> tuple[dict[str, Any], Any]:
        from cvtransfer.evaluation.segmentation_run import evaluate_segmentation

        metrics = evaluate_segmentation(run, data, out, device)
        return metrics, metrics["confusion"]

    def predict_run(self, run: Run, files: list[str], out: Path, device: torch.device) -> list[dict[str, Any]]:
        from cvtransfer.evaluation.segmentation_run import predict_segmentation

        return predict_segmentation(run, files, out, device)

    def report_builders(self, run: Run, title: str, seconds: float | None) -> list[ReportSection]:
        from cvtransfer.evaluation.segmentation_report import segmentation_sections

        return segmentation_sections(run, title, seconds)

    def method_label(self, config: Config) -> str:
        return f"{config.strategy}, {config.decoder} decoder"
