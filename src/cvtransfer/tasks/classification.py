"""Classification: one label per image, judged by accuracy, F1, ROC-AUC and the confusion matrix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from cvtransfer.evaluation.metrics import classification_metrics
from cvtransfer.models.factory import BuiltModel, build_feature_model, build_model
from cvtransfer.tasks.base import TASKS, Task

if TYPE_CHECKING:
    from cvtransfer.config import Config


@TASKS.register("classification")
class Classification(Task):
    """Cross-entropy on a linear head over the backbone's pooled features."""

    name = "classification"
    metric_name = "accuracy"
    run_files: ClassVar[tuple[str, ...]] = ("classes.json", "metrics.json", "confusion.png", "curves.png")
    report_sections: ClassVar[tuple[str, ...]] = ("summary", "config", "data", "curves", "confusion", "per-class", "roc", "diagnosis",
                       "top-losses", "grad-cam", "embedding")

    def build_model(self, config: Config, classes: list[str], weights: str, bottleneck_dim: int = 0,
                    feature_width: int | None = None) -> BuiltModel:
        if feature_width is not None:
            return build_feature_model(feature_width, weights, len(classes), config.mlp_dim, config.drop_rate,
                                       config.seed, bottleneck_dim, class_names=classes,
                                       allow_partial_weights=config.allow_partial_weights)
        return build_model(config.backbone, weights, len(classes), config.image_size, config.drop_rate, config.seed,
                           bottleneck_dim=bottleneck_dim, class_names=classes,
                           allow_partial_weights=config.allow_partial_weights)

    def criterion(self, config: Config, class_weights: torch.Tensor | None = None) -> nn.Module:
        return nn.CrossEntropyLoss(weight=class_weights, label_smoothing=config.label_smoothing)

    def sample_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs, targets, reduction="none")

    def metric(self, num_classes: int) -> Metric:
        return MulticlassAccuracy(num_classes, average="micro")

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().softmax(dim=1)

    def evaluate(self, probs: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict[str, Any]:
        return classification_metrics(probs, targets, classes)

    def summary(self, metrics: dict[str, Any]) -> str:
        return (f"{metrics['split']} accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['f1_macro']:.4f} "
                f"({metrics['num_samples']} images)")

    def prediction_rows(self, paths: list[str], probs: torch.Tensor, classes: list[str],
                        top_k: int = 1) -> list[dict[str, Any]]:
        k = min(top_k, len(classes))
        values, indices = probs.topk(k, dim=1)
        rows = []
        for path, vals, idxs in zip(paths, values.tolist(), indices.tolist()):
            row: dict[str, Any] = {"path": path, "label": classes[idxs[0]], "probability": vals[0]}
            if k > 1:
                row["top_k"] = ";".join(f"{classes[i]}:{v:.4f}" for i, v in zip(idxs, vals))
            rows.append(row)
        return rows
