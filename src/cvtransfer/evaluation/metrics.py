"""Classification metrics from predicted probabilities, computed with torchmetrics."""

from __future__ import annotations

import math
from typing import Any

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
    """accuracy, balanced accuracy, macro precision/recall/F1, one-vs-rest ROC-AUC, confusion, per class.

    ROC-AUC averages the classes that have both positives and negatives among ``targets``; it is
    ``None`` when no class has.
    """
    n = len(class_names)
    probs, targets = probs.float(), targets.long()
    per_class = {
        "precision": multiclass_precision(probs, targets, n, average="none", zero_division=0),
        "recall": multiclass_recall(probs, targets, n, average="none", zero_division=0),
        "f1": multiclass_f1_score(probs, targets, n, average="none", zero_division=0),
    }
    support = torch.bincount(targets, minlength=n)
    present = support > 0
    return {
        "num_samples": len(targets),
        "accuracy": float(multiclass_accuracy(probs, targets, n, average="micro")),
        "balanced_accuracy": float(per_class["recall"][present].mean()),
        "precision_macro": float(per_class["precision"][present].mean()),
        "recall_macro": float(per_class["recall"][present].mean()),
        "f1_macro": float(per_class["f1"][present].mean()),
        "roc_auc": _roc_auc(probs, targets, present),
        "confusion_matrix": multiclass_confusion_matrix(probs, targets, n).tolist(),
        "class_names": list(class_names),
        "per_class": {
            name: {**{k: float(v[i]) for k, v in per_class.items()}, "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
    }


def _roc_auc(probs: torch.Tensor, targets: torch.Tensor, present: torch.Tensor) -> float | None:
    usable = present & (present.sum() > 1)
    if usable.sum() == 0:
        return None
    scores = multiclass_auroc(probs, targets, probs.shape[1], average="none")
    value = float(scores[usable].mean())
    return None if math.isnan(value) else value
