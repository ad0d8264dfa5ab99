"""A segmentation run's evaluation and predictions, at the masks' own resolution.

Each image is resized so its shorter side is the run's ``--image-size`` (as in training), padded to the
encoder's stride, and its logits are cropped back and scaled to the image's original size before the
argmax: metrics.json counts every pixel of the original masks (one confusion matrix over the split).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F
from torchvision.transforms import v2

from cvtransfer.data.images import load_rgb
from cvtransfer.data.masks import SegmentationSplits, crop_to, discover_segmentation, pad_to_stride, read_mask
from cvtransfer.data.transforms import Preprocessing
from cvtransfer.errors import DataError
from cvtransfer.evaluation.segmentation import (
    colourise,
    confusion_matrix,
    default_palette,
    error_overlay,
    image_grid,
    overlay,
    per_class_iou_plot,
    save_index_png,
    save_png,
    segmentation_metrics,
)
from cvtransfer.io import beside, output_stems

if TYPE_CHECKING:
    from cvtransfer.run import Run

STRIDE = 32
EXAMPLES = 3  # best and worst images shown in examples.png


def eval_input(image: Any, preprocessing: Preprocessing, size: int) -> torch.Tensor:
    """An RGB image as the network reads it at evaluation: shorter side ``size``, normalised."""
    transform = v2.Compose([v2.ToImage(), v2.Resize(size, antialias=True), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(preprocessing.mean, preprocessing.std)])
    result: torch.Tensor = transform(image)
    return result


@torch.inference_mode()
def predict_mask(model: torch.nn.Module, image: Any, preprocessing: Preprocessing, size: int,
                 device: torch.device | str = "cpu") -> np.ndarray:
    """The class of every pixel of ``image`` (a PIL RGB image) at its own size, (H, W) int64."""
    x = eval_input(image, preprocessing, size)
    padded, shape = pad_to_stride(x, STRIDE, 0.0)
    logits = crop_to(model(padded.unsqueeze(0).to(device)), shape)
    logits = F.interpolate(logits.float(), size=(image.height, image.width), mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].cpu().numpy()


def run_palette(run: Run) -> list[tuple[int, int, int]]:
    """The classes' colours: the data's palette when it had one, else a standard colour map."""
    saved = _splits(run).palette
    return [tuple(c) for c in saved] if saved else default_palette(len(run.classes))  # type: ignore[misc]


def _splits(run: Run) -> SegmentationSplits:
    splits = run.splits()
    assert isinstance(splits, SegmentationSplits)
    return splits


def _samples(run: Run, data: str | Path | None) -> tuple[str, list[tuple[str, str]], SegmentationSplits]:
    splits = _splits(run)
    if data is not None:
        config = run.config
        splits = discover_segmentation(data, 0.0, 0.0, config.seed, config.ignore_index,
                                       config.classes_file or None, run.max_image_pixels)
        if splits.classes != run.classes:
            raise DataError(f"{data} has the classes {', '.join(splits.classes[:5])}... but the model was trained on "
                            f"{', '.join(run.classes[:5])}...: give it the run's classes.txt (--classes-file)")
    name = "test" if splits.test else "val" if splits.val else "train"
    return name, splits.split(name), splits


def _predictions(run: Run, samples: Sequence[tuple[str, str]], splits: SegmentationSplits,
                 device: torch.device | str) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(index, prediction, truth) of every sample, truth's ignored pixels as the run's ignore index."""
    model = run.model.to(device)
    size = run.config.image_size or run.preprocessing.input_size
    for index, (image_path, mask_path) in enumerate(samples):
        image = load_rgb(image_path, run.max_image_pixels)
        truth = read_mask(mask_path, splits.palette, splits.ignore_index, splits.ignore_colours)
        yield index, predict_mask(model, image, run.preprocessing, size, device), truth


def evaluate_segmentation(run: Run, data: str | Path | None, out: Path, device: torch.device | str) -> dict[str, Any]:
    """metrics.json (mIoU, Dice, pixel and mean class accuracy, per class, the confusion matrix), the
    per-class IoU chart and examples.png (the best and worst images: image, truth, prediction, errors)."""
    name, samples, splits = _samples(run, data)
    if not samples:
        raise DataError(f"no images to evaluate in the {name} split")
    classes, ignore = run.classes, splits.ignore_index
    total = torch.zeros(len(classes), len(classes), dtype=torch.long)
    per_image: list[float] = []
    for _, pred, truth in _predictions(run, samples, splits, device):
        confusion = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(truth), len(classes), ignore)
        total += confusion
        miou = segmentation_metrics(confusion, classes)["miou"]
        per_image.append(float("nan") if miou is None else miou)
    metrics = segmentation_metrics(total, classes)
    metrics.update(split=name, num_images=len(samples), ignore_index=ignore,
                   per_image_miou={Path(image).name: value for (image, _), value in zip(samples, per_image)})
    per_class_iou_plot(metrics, beside(out, "per_class_iou"))
    _examples(run, samples, splits, per_image, beside(out, "examples"), device)
    return metrics


def _examples(run: Run, samples: Sequence[tuple[str, str]], splits: SegmentationSplits, per_image: list[float],
              path: Path, device: torch.device | str) -> None:
    order = sorted((i for i, v in enumerate(per_image) if not np.isnan(v)), key=lambda i: per_image[i])
    chosen = list(dict.fromkeys([*order[::-1][:EXAMPLES], *order[:EXAMPLES]]))
    if not chosen:
        return
    palette, ignore = run_palette(run), splits.ignore_index
    rows, labels = [], []
    picked = [samples[i] for i in chosen]
    for (index, pred, truth), i in zip(_predictions(run, picked, splits, device), chosen):
        image = np.asarray(load_rgb(picked[index][0], run.max_image_pixels))
        rows.append([image, colourise(truth, palette, ignore), colourise(pred, palette, ignore),
                     error_overlay(image, pred, truth, ignore)])
        rank = "best" if i in order[::-1][:EXAMPLES] else "worst"
        labels.append(f"{rank}: {Path(picked[index][0]).name} (mIoU {per_image[i]:.2f})")
    image_grid(rows, ["image", "truth", "prediction", "errors (red)"], path, row_labels=labels)


def predict_segmentation(run: Run, files: Sequence[str], out: Path, device: torch.device | str) -> list[dict[str, Any]]:
    """For each image: OUT_DIR/masks/<stem>.png (palette PNG: the pixels are class indices, shown in colour),
    OUT_DIR/overlays/<stem>.png (stems made distinct: :func:`output_stems`), and a row with each class's share of the pixels; OUT_DIR is ``out``
    without its suffix (predictions.csv -> predictions/)."""
    folder = out.with_suffix("")
    palette, classes = run_palette(run), run.classes
    model = run.model.to(device)
    size = run.config.image_size or run.preprocessing.input_size
    rows = []
    for file, stem in zip(files, output_stems(files)):
        image = load_rgb(file, run.max_image_pixels)
        pred = predict_mask(model, image, run.preprocessing, size, device)
        mask_file, overlay_file = folder / "masks" / f"{stem}.png", folder / "overlays" / f"{stem}.png"
        mask_file.parent.mkdir(parents=True, exist_ok=True)
        overlay_file.parent.mkdir(parents=True, exist_ok=True)
        save_index_png(mask_file, pred, palette)
        save_png(overlay_file, overlay(np.asarray(image), pred, palette))
        counts = np.bincount(pred.ravel(), minlength=len(classes)) / max(1, pred.size)
        rows.append({"path": file, "mask": str(mask_file), "overlay": str(overlay_file),
                     **{f"share_{name}": float(v) for name, v in zip(classes, counts)}})
    return rows

