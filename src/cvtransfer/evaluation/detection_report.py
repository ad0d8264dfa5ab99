"""report.html's sections for a detection run, made from what the run folder already holds.

metrics.json (COCO's numbers over the evaluation split), pr_curve.png and examples.png are written when
the run finishes (:mod:`cvtransfer.evaluation.detection_run`); the page embeds them with the curves, the
config and the diagnosis, without running the model again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from cvtransfer.evaluation.detection_plots import ap_rows
from cvtransfer.evaluation.html import cards_html, figure_html, note, run_png_html, show_number, table_html
from cvtransfer.evaluation.plots import curves_figure

if TYPE_CHECKING:
    from cvtransfer.run import Run


def detection_sections(run: Run, title: str, seconds: float | None) -> list[tuple[str, str, Callable[[], Markup]]]:
    """(id, title, builder) of every section, in page order; ``title`` names the run (model / method),
    ``seconds`` is its training time (None without a history)."""
    return [
        ("summary", "Summary", lambda: _summary(run, title, seconds)),
        ("data", "Data", lambda: _data(run)),
        ("curves", "Learning curves", lambda: _curves(run, title)),
        ("per-class-ap", "Per-class AP", lambda: _per_class(run)),
        ("pr-curve", "Precision-recall curves", lambda: run_png_html(
            run.path, "pr_curve.png", "precision-recall curves",
            "Precision against recall at IoU 0.5 for each class, over all boxes of the evaluation split.")),
        ("examples", "Best and worst images", lambda: run_png_html(
            run.path, "examples.png", "best and worst images",
            f"The images of the evaluation split with the highest and lowest F1 at IoU 0.5 (boxes scoring at least "
            f"{_metrics(run).get('shown_score', 0.5)}): the true boxes in green; the predictions that hit a true box "
            "in blue, false positives in red, missed true boxes in yellow.")),
    ]


def _metrics(run: Run) -> dict[str, Any]:
    metrics = run.metrics
    if "map" not in metrics:
        raise FileNotFoundError(f"{run.path / 'metrics.json'} has no detection metrics: re-run cvtransfer evaluate")
    return metrics


def _summary(run: Run, title: str, seconds: float | None) -> Markup:
    metrics = _metrics(run)
    cards = [(show_number(metrics["map"]), "mAP@[.5:.95]"), (show_number(metrics["map_50"]), "mAP@.5"),
             (show_number(metrics["map_75"]), "mAP@.75"), (show_number(metrics["mar_100"]), "recall@100"),
             (str(metrics["num_images"]), f"{metrics['split']} images"), (str(metrics["num_boxes"]), "true boxes"),
             (str(len(run.history)), "epochs"), ("n/a" if seconds is None else f"{seconds:.1f} s", "training time")]
    sizes = ", ".join(f"{size} {show_number(metrics.get(f'map_{size}'))}" for size in ("small", "medium", "large"))
    return cards_html(cards) + note(
        f"{title}, {run.config.norm} BatchNorm, shorter side resized to {run.config.image_size} px by the detector. "
        f"COCO's protocol (torchmetrics' MeanAveragePrecision) over the {metrics['split']} split in the images' "
        f"own pixels; mAP by object size: {sizes} (n/a: no true box of that size).")


def _data(run: Run) -> Markup:
    splits = run.splits()
    rows = [(name, *splits.counts(name).values()) for name in ("train", "val", "test") if splits.split(name)]
    return table_html(("split", "images", "boxes"), rows, numeric=[False, True, True]) + note(
        f"Images and true boxes per split (data: {run.config.data}); classes: {', '.join(run.classes)}.")


def _curves(run: Run, title: str) -> Markup:
    history = run.history
    if not history:
        return note("No history.csv: this run has no learning curves.")
    return figure_html(curves_figure(history, f"Learning curves: {title}", metric_name="map"), "learning curves",
                       "The detector's summed losses per epoch (training images, and the validation images with "
                       "the norm layers fixed), and the validation mAP that picks the kept epoch.")


def _per_class(run: Run) -> Markup:
    rows = [(row["class"], row["ap"], row["recall"], row["boxes"]) for row in ap_rows(_metrics(run))]
    return table_html(("class", "AP@[.5:.95]", "recall@100", "true boxes"), rows,
                      numeric=[False, True, True, True]) + note("n/a: the class has no true box in this split.")
