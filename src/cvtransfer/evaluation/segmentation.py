"""Segmentation metrics from one confusion matrix over a split, and the pictures of masks.

The metrics (mIoU, Dice, pixel and mean class accuracy) all come from a single confusion matrix summed
over every pixel of the split, the ignore index left out: not from a mean of per-image or per-batch
scores. A class absent from both the truth and the prediction has no IoU (None) and is left out of the
means; a class predicted but absent from the truth has IoU 0 and counts.

The pictures take and give numpy uint8 arrays: masks (H, W) of class indices, images (H, W, 3).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_confusion_matrix

from cvtransfer.evaluation.plots import save_figure
from cvtransfer.io import atomic_path

Palette = list[tuple[int, int, int]]

ERROR_COLOUR = (255, 0, 0)  # wrong pixels in error_overlay
DIM = 0.5  # how much of the image correct pixels keep in error_overlay


def confusion_matrix(preds: Tensor, targets: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """Pixel counts (num_classes, num_classes) int64, rows the truth and columns the prediction.

    ``preds`` and ``targets`` are integer class maps of one shape; pixels whose truth is ``ignore_index``
    (any value, 255 or -100 included) are left out.
    """
    if preds.shape != targets.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and targets {tuple(targets.shape)} differ in shape")
    if preds.is_floating_point() or targets.is_floating_point():
        raise ValueError("preds and targets must be integer class maps (take the argmax of the logits first)")
    kept = targets != ignore_index
    outside = kept & ((targets < 0) | (targets >= num_classes) | (preds < 0) | (preds >= num_classes))
    if bool(outside.any()):
        found = torch.unique(torch.cat((targets[outside].long(), preds[outside].long())))
        wrong = [v for v in found.tolist() if not 0 <= v < num_classes]
        raise ValueError(f"class indices must lie in [0, {num_classes}) outside the ignored pixels "
                         f"(ignore index {ignore_index}); found {wrong[:10]}")
    # validate_args=False: torchmetrics' check only counts distinct values, so an index past num_classes
    # would land silently in another cell; the range is checked above instead
    return multiclass_confusion_matrix(preds, targets, num_classes, ignore_index=ignore_index, validate_args=False)


def _ratios(numerator: Tensor, denominator: Tensor) -> list[float | None]:
    """numerator / denominator per class, None where the denominator is 0."""
    return [n / d if d > 0 else None for n, d in zip(numerator.tolist(), denominator.tolist())]


def _mean(values: list[float | None]) -> float | None:
    """The mean of the values that are not None; None when none is."""
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def segmentation_metrics(confusion: Tensor, classes: list[str]) -> dict[str, Any]:
    """mIoU, mean Dice, pixel accuracy, mean class accuracy and per-class scores of one confusion matrix.

    IoU and Dice are None for a class absent from both truth and prediction, and left out of the means;
    mean class accuracy averages the recall of the classes with truth pixels. Every score is None when
    the matrix counts no pixel.
    """
    if tuple(confusion.shape) != (len(classes), len(classes)):
        raise ValueError(f"a confusion matrix of {len(classes)} classes is {len(classes)}x{len(classes)}, "
                         f"not {tuple(confusion.shape)}")
    counts = confusion.detach().cpu().to(torch.float64)
    hits, truth, predicted = counts.diagonal(), counts.sum(1), counts.sum(0)
    iou = _ratios(hits, truth + predicted - hits)
    dice = _ratios(2 * hits, truth + predicted)
    recall = _ratios(hits, truth)
    total = int(counts.sum())
    return {
        "miou": _mean(iou),
        "dice": _mean(dice),
        "pixel_accuracy": float(hits.sum()) / total if total else None,
        "mean_class_accuracy": _mean(recall),
        "per_class": [{"class": name, "iou": iou[i], "dice": dice[i], "accuracy": recall[i],
                       "pixels": int(truth[i]), "predicted": int(predicted[i])} for i, name in enumerate(classes)],
        "confusion": confusion.detach().cpu().long().tolist(),
        "num_pixels": total,
    }


class MeanIoU(Metric):
    """mIoU of one confusion matrix accumulated over every update (the epoch's, not a mean of batches).

    ``update`` takes logits (B, C, H, W), bilinearly resized to the targets' size when it differs, or
    integer predictions (B, H, W). ``compute`` averages the IoU of the classes present in the truth or the
    prediction; it is 0.0 before any pixel is counted.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confusion: Tensor

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confusion", default=torch.zeros(num_classes, num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, preds: Tensor, targets: Tensor) -> None:
        """Count the pixels of a batch: ``preds`` logits (B, C, H, W) or class indices (B, H, W)."""
        if preds.is_floating_point() and preds.ndim == targets.ndim + 1:
            if preds.shape[2:] != targets.shape[1:]:
                preds = F.interpolate(preds.float(), size=tuple(targets.shape[1:]), mode="bilinear",
                                      align_corners=False)
            preds = preds.argmax(dim=1)
        self.confusion += confusion_matrix(preds, targets, self.num_classes, self.ignore_index)

    def compute(self) -> Tensor:
        """The mean IoU of the present classes, as a float tensor."""
        counts = self.confusion.double()
        hits = counts.diagonal()
        union = counts.sum(0) + counts.sum(1) - hits
        present = union > 0
        iou = torch.where(present, hits / union.clamp(min=1), torch.zeros_like(hits))
        return (iou.sum() / present.sum().clamp(min=1)).float()


def default_palette(num_classes: int) -> Palette:
    """The Pascal VOC colour map: the bits of the class index interleaved over R, G and B (class 0 black)."""
    index = np.arange(num_classes)
    colours = np.zeros((num_classes, 3), dtype=np.int64)
    for shift in range(8):  # each pass gives every channel one more bit, from the top down
        for channel in range(3):
            colours[:, channel] |= ((index >> (3 * shift + channel)) & 1) << (7 - shift)
    return [(int(r), int(g), int(b)) for r, g, b in colours]


def _coloured(mask: np.ndarray, palette: Palette, ignore_index: int) -> np.ndarray:
    """Where ``mask`` holds a class of ``palette`` (not ignored, not past its end)."""
    return (mask >= 0) & (mask < len(palette)) & (mask != ignore_index)


def colourise(mask: np.ndarray, palette: Palette, ignore_index: int = 255) -> np.ndarray:
    """(H, W, 3) uint8: each pixel its class's colour; ignored pixels and classes past the palette black."""
    out = np.zeros((*mask.shape, 3), dtype=np.uint8)
    coloured = _coloured(mask, palette, ignore_index)
    out[coloured] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[mask[coloured]]
    return out


def _check_image(image: np.ndarray, mask: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != mask.shape:
        raise ValueError(f"an (H, W, 3) image of the mask's size {mask.shape} is needed, not {image.shape}")


def overlay(image: np.ndarray, mask: np.ndarray, palette: Palette, ignore_index: int = 255,
            alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: the class colours blended over ``image`` with weight ``alpha``; ignored pixels
    (and classes past the palette) keep the image."""
    _check_image(image, mask)
    blend = (1 - alpha) * image.astype(np.float32) + alpha * colourise(mask, palette, ignore_index)
    out = image.copy()
    coloured = _coloured(mask, palette, ignore_index)
    out[coloured] = np.rint(blend[coloured]).clip(0, 255).astype(np.uint8)
    return out


def error_overlay(image: np.ndarray, pred: np.ndarray, truth: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """(H, W, 3) uint8: wrong pixels red, correct ones the image dimmed, ignored ones the image unchanged."""
    _check_image(image, truth)
    if pred.shape != truth.shape:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} differ in shape")
    counted = truth != ignore_index
    correct = counted & (pred == truth)
    out = image.copy()
    out[correct] = np.rint(image[correct] * DIM).astype(np.uint8)
    out[counted & ~correct] = ERROR_COLOUR
    return out


def save_index_png(path: str | Path, mask: np.ndarray, palette: Palette) -> None:
    """A palette ('P') PNG whose pixel values are the class indices, shown in ``palette``'s colours."""
    if len(palette) > 256 or (mask.size and (mask.min() < 0 or mask.max() > 255)):
        raise ValueError("a palette PNG holds class indices 0..255 only")
    height, width = mask.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    colours = [value for colour in palette for value in colour]
    image.putpalette(colours + [0] * (768 - len(colours)))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_png(path: str | Path, rgb: np.ndarray) -> None:
    """An RGB PNG of an (H, W, 3) uint8 array, written atomically."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"an (H, W, 3) image is needed, not {rgb.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(tmp, format="PNG")


def per_class_iou_figure(metrics: dict[str, Any]) -> plt.Figure:
    """Horizontal bars of each class's IoU, the classes absent from truth and prediction marked 'absent'."""
    rows = metrics["per_class"]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(rows) + 1.2)))
    positions = range(len(rows))
    values = [row["iou"] or 0.0 for row in rows]
    ax.barh(positions, values, color="tab:blue")
    for position, row in zip(positions, rows):
        text = "absent" if row["iou"] is None else f"{row['iou']:.3f}"
        ax.text(values[position] + 0.01, position, text, va="center", fontsize=8,
                color="grey" if row["iou"] is None else "black")
    ax.set_yticks(list(positions), [row["class"] for row in rows])
    ax.invert_yaxis()  # the first class on top
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("IoU")
    ax.grid(axis="x", alpha=0.3)
    miou = metrics.get("miou")
    ax.set_title("Per-class IoU" + (f" (mIoU {miou:.3f})" if miou is not None else ""))
    fig.tight_layout()
    return fig


def per_class_iou_plot(metrics: dict[str, Any], path: str | Path) -> None:
    """Save :func:`per_class_iou_figure` as a PNG."""
    save_figure(per_class_iou_figure(metrics), path)


def image_grid_figure(rows: list[list[np.ndarray]], titles: list[str], row_labels: list[str] | None = None
                      ) -> plt.Figure:
    """One row of pictures per image (e.g. image, truth, prediction, errors), ``titles`` over the columns."""
    if not rows:
        raise ValueError("an image grid needs at least one row")
    columns = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(3.2 * columns, 3 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.axis("off")
                continue
            ax.imshow(row[c], cmap="gray" if row[c].ndim == 2 else None, interpolation="nearest")
            if r == 0 and c < len(titles):
                ax.set_title(titles[c], fontsize=10)
        if row_labels is not None and r < len(row_labels):
            axes[r][0].set_ylabel(row_labels[r], fontsize=8)
    fig.tight_layout()
    return fig


def image_grid(rows: list[list[np.ndarray]], titles: list[str], path: str | Path,
               row_labels: list[str] | None = None) -> None:
    """Save :func:`image_grid_figure` as a PNG."""
    save_figure(image_grid_figure(rows, titles, row_labels), path)
