"""A detection run's evaluation and predictions, in the images' own pixels.

Each image goes to the detector at its own size; the detector resizes it (shorter side ``--image-size``)
and maps its boxes back, so boxes, areas (COCO's small / medium / large) and the mAP are those of the
original images. metrics.json holds torchmetrics' MeanAveragePrecision over the whole split: mAP@[.5:.95],
mAP@.5, mAP@.75, by object size, recall, and AP per class.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torchvision.transforms import v2
from torchvision.utils import draw_bounding_boxes

from cvtransfer.data.box_splits import DetectionSplits, discover_detection_splits
from cvtransfer.data.boxes import BoxImage
from cvtransfer.data.images import load_rgb
from cvtransfer.errors import DataError
from cvtransfer.evaluation.detection import mean_average_precision
from cvtransfer.evaluation.detection_plots import draw_truth_and_prediction, image_f1, match, pr_curve_plot
from cvtransfer.evaluation.segmentation import image_grid
from cvtransfer.io import atomic_write_text, beside, output_stems

if TYPE_CHECKING:
    from cvtransfer.run import Run

Boxes = dict[str, torch.Tensor]
SHOWN_SCORE = 0.5  # predictions.csv and the drawn images keep boxes scoring at least this (the json keeps all)
EXAMPLES = 3  # best and worst images shown in examples.png
SUMMARY_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100",
                "mar_small", "mar_medium", "mar_large")


@torch.inference_mode()
def detect(model: torch.nn.Module, files: Sequence[str], device: torch.device | str, batch_size: int = 4,
           max_pixels: int | None = None) -> list[Boxes]:
    """The detector's boxes, scores and labels (the user's 0-based classes) for each image file, on the CPU."""
    model = model.to(device).eval()
    results: list[Boxes] = []
    for start in range(0, len(files), batch_size):
        images = [v2.functional.to_dtype(v2.functional.pil_to_tensor(
            load_rgb(file, *(() if max_pixels is None else (max_pixels,)))), torch.float32, scale=True).to(device)
            for file in files[start:start + batch_size]]
        results += [{key: value.cpu() for key, value in output.items()} for output in model(images)]
    return results


def detection_metrics(predictions: Sequence[Boxes], truth: Sequence[BoxImage], classes: list[str],
                      pr_curve: str | Path | None = None) -> dict[str, Any]:
    """COCO's numbers of ``predictions`` against ``truth`` (one evaluation over all images); -1 (no box of that
    kind anywhere) becomes None; ``per_class``: AP and recall@100 of each class with its count of true boxes.
    ``pr_curve``: where to save the precision-recall curves at IoU 0.5."""
    metric = mean_average_precision(class_metrics=True, extended_summary=pr_curve is not None)
    metric.update(list(predictions), [target(image) for image in truth])
    values = metric.compute()
    if pr_curve is not None:
        pr_curve_plot(values["precision"], values["classes"], classes, pr_curve)
    metrics: dict[str, Any] = {key: _number(values[key]) for key in SUMMARY_KEYS}
    counts = torch.bincount(torch.cat([torch.as_tensor(image.labels) for image in truth] + [torch.zeros(0, dtype=torch.long)]),
                            minlength=len(classes))
    per_class = {int(c): (_number(ap), _number(ar)) for c, ap, ar in
                 zip(values["classes"].reshape(-1), values["map_per_class"].reshape(-1),
                     values["mar_100_per_class"].reshape(-1))}
    metrics["per_class"] = [{"class": name, "ap": per_class.get(i, (None, None))[0],
                             "recall": per_class.get(i, (None, None))[1], "boxes": int(counts[i])}
                            for i, name in enumerate(classes)]
    metrics.update(num_images=len(truth), num_boxes=int(counts.sum()))
    return metrics


def target(image: BoxImage) -> Boxes:
    """An image's true boxes as torchmetrics reads them."""
    return {"boxes": torch.as_tensor(image.boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(image.labels, dtype=torch.long)}


def _number(value: torch.Tensor) -> float | None:
    number = float(value)
    return None if number < 0 else number


def evaluation_images(run: Run, data: str | Path | None) -> tuple[str, list[BoxImage]]:
    """(split name, its images): the run's test split (else val), or DATA's test split (else val, else all)."""
    splits = run.splits()
    assert isinstance(splits, DetectionSplits)
    if data is not None:
        found = discover_detection_splits(data, 0.0, 0.0, run.config.seed, run.config.missing_labels,
                                          require_train=False, max_pixels=run.max_image_pixels)
        unknown = sorted(set(found.classes) - set(run.classes))
        if unknown:
            raise DataError(f"{data} has class(es) the model was not trained on: {', '.join(unknown[:5])}")
        remap = torch.tensor([run.classes.index(name) for name in found.classes] or [0])
        for name in ("train", "val", "test"):
            setattr(found, name, [BoxImage(im.image, im.width, im.height, im.boxes, remap[im.labels].numpy())
                                  for im in found.split(name)])
        splits = found
    name = "test" if splits.test else "val" if splits.val else "train"
    return name, splits.split(name)


def evaluate_detection(run: Run, data: str | Path | None, out: Path, device: torch.device | str) -> dict[str, Any]:
    """metrics.json's content for the run's evaluation split (or DATA's); the precision-recall curves and
    examples.png (the best and worst images by F1 at IoU 0.5: truth, and predictions with hits and misses)
    beside ``out``."""
    name, images = evaluation_images(run, data)
    if not images:
        raise DataError(f"no images to evaluate in the {name} split")
    predictions = detect(run.model, [image.image for image in images], device, run.config.batch_size,
                         run.max_image_pixels)
    metrics = detection_metrics(predictions, images, run.classes,
                                beside(out, "pr_curve"))
    shown = [{key: value[output["scores"] >= SHOWN_SCORE] for key, value in output.items()} for output in predictions]
    scores = []
    for output, image in zip(shown, images):
        truth = target(image)
        scores.append(image_f1(*match(output["boxes"], output["scores"], output["labels"], truth["boxes"],
                                      truth["labels"])))
    metrics.update(split=name, shown_score=SHOWN_SCORE,
                   per_image_f1={Path(image.image).name: value for image, value in zip(images, scores)})
    _examples(run, images, shown, scores, beside(out, "examples"))
    return metrics


def _examples(run: Run, images: Sequence[BoxImage], shown: Sequence[Boxes], scores: list[float], path: Path) -> None:
    """examples.png: the EXAMPLES best and worst images, their true boxes beside the predictions."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    best, worst = order[::-1][:EXAMPLES], order[:EXAMPLES]
    rows, labels = [], []
    for i in dict.fromkeys([*best, *worst]):
        pixels = v2.functional.pil_to_tensor(load_rgb(images[i].image, run.max_image_pixels))
        truth = target(images[i])
        rows.append(list(draw_truth_and_prediction(pixels, shown[i], truth["boxes"], truth["labels"], run.classes)))
        labels.append(f"{'best' if i in best else 'worst'}: {Path(images[i].image).name} (F1 {scores[i]:.2f})")
    if rows:
        image_grid(rows, ["truth", f"prediction (score >= {SHOWN_SCORE}): hits blue, false red, missed yellow"],
                   path, row_labels=labels)


def predict_detection(run: Run, files: Sequence[str], out: Path, device: torch.device | str) -> list[dict[str, Any]]:
    """One row per box scoring at least SHOWN_SCORE (path, label, score, x1, y1, x2, y2 in the image's pixels;
    an image without one gets a row with an empty label);
    ``out`` without its suffix gets predictions.json (every box, per image) and the images with their boxes
    drawn (drawn/<stem>.png, stems made distinct: :func:`output_stems`)."""
    folder = out.with_suffix("")
    (folder / "drawn").mkdir(parents=True, exist_ok=True)
    predictions = detect(run.model, list(files), device, run.config.batch_size, run.max_image_pixels)
    rows: list[dict[str, Any]] = []
    listing = []
    for file, found, stem in zip(files, predictions, output_stems(files)):
        boxes: list[dict[str, Any]] = [
            {"label": run.classes[int(label)], "score": float(score), "box": [float(v) for v in box]}
                 for box, score, label in zip(found["boxes"], found["scores"], found["labels"])]
        drawn = folder / "drawn" / f"{stem}.png"
        listing.append({"path": file, "drawn": str(drawn), "boxes": boxes})
        shown = [box for box in boxes if box["score"] >= SHOWN_SCORE]
        rows += [{"path": file, "label": box["label"], "score": box["score"],
                  **dict(zip(("x1", "y1", "x2", "y2"), box["box"]))} for box in shown]
        if not shown:  # every image has its line: an empty label says nothing was found
            rows.append({"path": file, "label": "", "score": "", "x1": "", "y1": "", "x2": "", "y2": ""})
        draw(file, shown, drawn, run.max_image_pixels)
    atomic_write_text(folder / "predictions.json", json.dumps(listing, indent=1))
    return rows


def draw(file: str, boxes: Sequence[dict[str, Any]], path: Path, max_pixels: int | None = None,
         colour: str = "orange") -> None:
    """``file`` with ``boxes`` ({"label", "score", "box"}) drawn and named, saved as a PNG at ``path``."""
    image = v2.functional.pil_to_tensor(load_rgb(file, *(() if max_pixels is None else (max_pixels,))))
    if boxes:
        image = draw_bounding_boxes(image, torch.tensor([box["box"] for box in boxes]).reshape(-1, 4),
                                    [f"{box['label']} {box['score']:.2f}" for box in boxes], colors=colour, width=2)
    v2.functional.to_pil_image(image).save(path)
