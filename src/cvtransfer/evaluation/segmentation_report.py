"""report.html's sections for a segmentation run, made from what the run folder already holds.

metrics.json (one confusion matrix over the evaluation split), per_class_iou.png, confusion.png and
examples.png are written when the run finishes (:mod:`cvtransfer.evaluation.segmentation_run`); the
page embeds them with the curves, the config and the diagnosis, without running the model again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from cvtransfer.evaluation.html import cards_html, figure_html, note, run_png_html, show_number, table_html
from cvtransfer.evaluation.plots import curves_figure

if TYPE_CHECKING:
    from cvtransfer.run import Run


def segmentation_sections(run: Run, title: str, seconds: float | None) -> list[tuple[str, str, Callable[[], Markup]]]:
    """(id, title, builder) of every section, in page order; ``title`` names the run (model / method),
    ``seconds`` is its training time (None without a history)."""
    return [
        ("summary", "Summary", lambda: _summary(run, title, seconds)),
        ("data", "Data", lambda: _data(run)),
        ("curves", "Learning curves", lambda: _curves(run, title)),
        ("per-class-iou", "Per-class IoU", lambda: _per_class(run)),
        ("confusion", "Confusion matrix", lambda: run_png_html(run.path, "confusion.png", "confusion matrix",
                                                          "Pixels, each row divided by the true class's pixels: "
                                                          "the diagonal is each class's accuracy (recall).")),
        ("examples", "Best and worst images", lambda: run_png_html(
            run.path, "examples.png", "best and worst images",
            "The images of the evaluation split with the highest and lowest mIoU: the image, its true mask, the "
            "prediction and the wrong pixels in red (unlabelled pixels are black in the masks and not judged).")),
    ]


def _metrics(run: Run) -> dict[str, Any]:
    metrics = run.metrics
    if "miou" not in metrics:
        raise FileNotFoundError(f"{run.path / 'metrics.json'} has no segmentation metrics: re-run cvtransfer evaluate")
    return metrics


def _summary(run: Run, title: str, seconds: float | None) -> Markup:
    metrics = _metrics(run)
    cards = [(show_number(metrics["miou"]), "mIoU"), (show_number(metrics["dice"]), "mean Dice"),
             (show_number(metrics["pixel_accuracy"]), "pixel accuracy"),
             (show_number(metrics["mean_class_accuracy"]), "mean class accuracy"),
             (str(metrics["num_images"]), f"{metrics['split']} images"), (str(len(run.history)), "epochs"),
             ("n/a" if seconds is None else f"{seconds:.1f} s", "training time")]
    return cards_html(cards) + note(
        f"{title}, {run.config.decoder} decoder. Metrics on the {metrics['split']} split from one confusion "
        f"matrix over all its pixels at the masks' own resolution, pixels of value {metrics['ignore_index']} left "
        "out; a class absent from both the truth and the prediction is not counted in the means.")


def _data(run: Run) -> Markup:
    splits = run.splits()
    rows = [(name, len(splits.split(name))) for name in ("train", "val", "test") if splits.split(name)]
    return table_html(("split", "images"), rows, numeric=[False, True]) + note(
        f"Images with masks per split (data: {run.config.data}); classes: {', '.join(run.classes)}.")


def _curves(run: Run, title: str) -> Markup:
    history = run.history
    if not history:
        return note("No history.csv: this run has no learning curves.")
    return figure_html(curves_figure(history, f"Learning curves: {title}", metric_name="miou"), "learning curves",
                       "Pixel cross-entropy and mIoU per epoch, training crops against the validation images.")


def _per_class(run: Run) -> Markup:
    metrics = _metrics(run)
    rows = [(row["class"], row["iou"], row["dice"], row["accuracy"], row["pixels"]) for row in metrics["per_class"]]
    table = table_html(("class", "IoU", "Dice", "accuracy", "true pixels"), rows,
                       numeric=[False, True, True, True, True])
    return table + run_png_html(run.path, "per_class_iou.png", "per-class IoU", "IoU of each class (n/a: absent from "
                           "both the truth and the prediction).")
