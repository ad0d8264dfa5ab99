"""COCO's mean average precision of boxes, as torchmetrics computes it, on the fastest installed backend."""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

import torch
from torchmetrics.detection import MeanAveragePrecision


def map_backend() -> Literal["pycocotools", "faster_coco_eval"]:
    """faster-coco-eval when installed (faster), else pycocotools: torchmetrics' two COCO evaluators."""
    return "faster_coco_eval" if importlib.util.find_spec("faster_coco_eval") else "pycocotools"


def mean_average_precision(**options: Any) -> MeanAveragePrecision:
    """torchmetrics' MeanAveragePrecision (boxes in x1, y1, x2, y2 pixels, COCO's protocol)."""
    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend=map_backend(), **options)


class MapScore(MeanAveragePrecision):
    """COCO mAP@[.5:.95] as one number (what the history logs and best.ckpt is chosen by): the metric's
    compute keeps only "map"; -1 (no box anywhere) counts as 0."""

    def __init__(self) -> None:
        super().__init__(box_format="xyxy", iou_type="bbox", backend=map_backend())

    def compute(self) -> torch.Tensor:  # type: ignore[override]
        score: torch.Tensor = super().compute()["map"]
        return score.clamp(min=0.0)
