"""Pictures of a detection run: precision-recall curves per class, and images with their hits and misses.

A prediction (score >= the shown threshold) is a hit when it overlaps an unmatched true box of its class
by IoU >= 0.5 (greedy by score, COCO's rule at its loosest threshold), else a false positive; a true box
no hit claims is a miss. The examples show, for the best and worst images by that F1, the truth and the
prediction side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torchvision.ops import box_iou
from torchvision.utils import draw_bounding_boxes

from cvtransfer.evaluation.plots import save_figure

MATCH_IOU = 0.5
TRUTH, HIT, FALSE_POSITIVE, MISS = "limegreen", "deepskyblue", "red", "yellow"


def match(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, true_boxes: torch.Tensor,
          true_labels: torch.Tensor, iou: float = MATCH_IOU) -> tuple[torch.Tensor, torch.Tensor]:
    """(hit per prediction, found per true box): greedy matching by descending score within each class."""
    hits = torch.zeros(len(boxes), dtype=torch.bool)
    found = torch.zeros(len(true_boxes), dtype=torch.bool)
    if not len(boxes) or not len(true_boxes):
        return hits, found
    overlaps = box_iou(boxes.float(), true_boxes.float())
    overlaps[labels[:, None] != true_labels[None, :]] = -1.0
    for i in torch.argsort(scores, descending=True).tolist():
        candidates = overlaps[i].clone()
        candidates[found] = -1.0
        best = int(candidates.argmax())
        if candidates[best] >= iou:
            hits[i], found[best] = True, True
    return hits, found


def image_f1(hits: torch.Tensor, found: torch.Tensor) -> float:
    """F1 of one image's hits (1.0 for an image with neither a box nor a prediction)."""
    predicted, true = len(hits), len(found)
    if predicted == 0 and true == 0:
        return 1.0
    return float(2 * int(hits.sum()) / (predicted + true))


def draw_truth_and_prediction(image: torch.Tensor, prediction: dict[str, torch.Tensor], true_boxes: torch.Tensor,
                              true_labels: torch.Tensor, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(the true boxes drawn, the predictions drawn: hits blue, false positives red, misses yellow) as HWC arrays."""
    hits, found = match(prediction["boxes"], prediction["scores"], prediction["labels"], true_boxes, true_labels)
    truth = _draw(image, true_boxes, [classes[int(c)] for c in true_labels], [TRUTH] * len(true_boxes))
    names = [f"{classes[int(c)]} {float(s):.2f}" for c, s in zip(prediction["labels"], prediction["scores"])]
    missed = true_boxes[~found]
    predicted = _draw(image, torch.cat([prediction["boxes"].float().reshape(-1, 4), missed.float().reshape(-1, 4)]),
                      names + ["missed"] * len(missed),
                      [HIT if hit else FALSE_POSITIVE for hit in hits.tolist()] + [MISS] * len(missed))
    return truth, predicted


def _draw(image: torch.Tensor, boxes: torch.Tensor, names: list[str], colours: list[str]) -> np.ndarray:
    if len(boxes):
        image = draw_bounding_boxes(image, boxes.reshape(-1, 4), names, colors=colours, width=2)
    return image.permute(1, 2, 0).numpy()


def pr_curve_figure(precision: torch.Tensor, class_ids: torch.Tensor, classes: Sequence[str]) -> plt.Figure:
    """Precision against recall at IoU 0.5 per class, from MeanAveragePrecision's extended summary
    (``precision``: (IoU thresholds, 101 recall points, K, areas, max detections), -1 = no data; its K
    axis holds the classes ``class_ids``, those found in the truth or the predictions)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    recall = np.linspace(0.0, 1.0, precision.shape[1])
    for k, class_id in enumerate(class_ids.reshape(-1).tolist()[:precision.shape[2]]):
        name = classes[int(class_id)]
        values = precision[0, :, k, 0, -1].numpy()
        if (values < 0).all():
            continue
        ax.plot(recall, np.where(values < 0, np.nan, values), label=name)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title="Precision-recall at IoU 0.5, per class")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def pr_curve_plot(precision: torch.Tensor, class_ids: torch.Tensor, classes: Sequence[str], path: str | Path) -> None:
    """Save :func:`pr_curve_figure` as a PNG."""
    save_figure(pr_curve_figure(precision, class_ids, classes), path)


def ap_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-class table of metrics.json, classes with boxes first, by AP."""
    rows = list(metrics.get("per_class", []))
    return sorted(rows, key=lambda row: (row["ap"] is None, -(row["ap"] or 0.0)))
