"""What ``fewshot-eval`` shows beyond its table: the per-class accuracy and confusion of one method over all
its episodes, the queries it got wrong beside the support images, and report.html of the folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from cvtransfer.data.images import load_rgb
from cvtransfer.evaluation.html import Section, cards_html, note, png_html, table_html, write_page
from cvtransfer.evaluation.plots import plot_confusion
from cvtransfer.evaluation.segmentation import image_grid

ERRORS_SHOWN = 6  # wrong queries drawn in errors.png
PICTURE_SIDE = 96  # pixels of each picture in errors.png


class EpisodeTally:
    """Predictions of one method over its episodes, in the dataset's classes: a confusion matrix and the first
    wrong queries with one support image of the true and of the predicted class."""

    def __init__(self, num_classes: int) -> None:
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.errors: list[tuple[int, int, int, int, int]] = []  # query, true, predicted, support of each

    def add(self, classes: np.ndarray, support: np.ndarray, shots: int, query: np.ndarray, truth: np.ndarray,
            predicted: np.ndarray) -> None:
        """One episode: ``classes`` its dataset classes, ``support``/``query`` sample indices (class-major),
        ``truth``/``predicted`` the queries' episode labels."""
        np.add.at(self.confusion, (classes[truth], classes[predicted]), 1)
        for index in np.flatnonzero(truth != predicted):
            if len(self.errors) < ERRORS_SHOWN:
                self.errors.append((int(query[index]), int(classes[truth[index]]), int(classes[predicted[index]]),
                                    int(support[truth[index] * shots]), int(support[predicted[index] * shots])))

    def per_class(self, class_names: list[str]) -> list[dict[str, Any]]:
        """Accuracy of the queries of each class (over every episode it was drawn in)."""
        totals = self.confusion.sum(axis=1)
        return [{"class": name, "accuracy": float(self.confusion[i, i] / totals[i]) if totals[i] else None,
                 "queries": int(totals[i])} for i, name in enumerate(class_names)]


def write_pictures(tally: EpisodeTally, class_names: list[str], paths: list[str], folder: Path,
                   max_pixels: int) -> None:
    """confusion.png (rows: true classes, each divided by its queries) and errors.png (wrong queries)."""
    plot_confusion(tally.confusion.tolist(), class_names, folder / "confusion.png", normalise=True)
    if not tally.errors:
        (folder / "errors.png").unlink(missing_ok=True)  # an earlier evaluation's, into the same --out
        return

    def picture(index: int) -> np.ndarray:
        return np.asarray(load_rgb(paths[index], max_pixels).resize((PICTURE_SIDE, PICTURE_SIDE)))

    rows = [[picture(q), picture(p_support), picture(t_support)] for q, _, _, t_support, p_support in tally.errors]
    labels = [f"true {class_names[t]}, predicted {class_names[p]}" for _, t, p, _, _ in tally.errors]
    image_grid(rows, ["query", "a support image of the predicted class", "a support image of the true class"],
               folder / "errors.png", row_labels=labels)


def write_fewshot_report(folder: Path, saved: dict[str, Any]) -> Path:
    """report.html of a fewshot-eval folder, from its fewshot.json and pictures."""
    rows = saved["results"]
    detail = saved["detail"]
    best = max(rows, key=lambda row: (row["shots"], row["accuracy"]))
    cards = [(f"{100 * best['accuracy']:.1f}%", f"best: {best['method']}, {best['ways']}-way {best['shots']}-shot"),
             (str(len(saved["classes"])), "classes"), (str(saved["images"]), "images"),
             (str(rows[0]["episodes"]), "episodes per setting"), (f"{saved['feature_seconds']:.1f} s", "features")]
    table = table_html(["method", "setting", "accuracy", "95% interval", "seconds"],
                       [[row["method"], f"{row['ways']}-way {row['shots']}-shot", f"{100 * row['accuracy']:.1f}%",
                         "n/a" if row["ci95"] is None else f"+- {100 * row['ci95']:.1f}", f"{row['seconds']:.1f}"]
                        for row in rows],
                       numeric=[False, False, True, True, True])
    per_class = table_html(["class", "accuracy", "queries"],
                           [[row["class"], "n/a" if row["accuracy"] is None else f"{100 * row['accuracy']:.1f}%",
                             row["queries"]] for row in detail["per_class"]], numeric=[False, True, True])
    setting = f"{detail['method']}, {rows[0]['ways']}-way {detail['shots']}-shot"
    sections = [
        Section("summary", "Summary", cards_html(cards) + table + note(
            f"{saved['backbone']} ({saved['weights']}) features; every method on the same seeded episodes (seed "
            f"{saved['seed']}); the interval is 1.96 standard errors over episodes.")),
        Section("per-class", "Per-class accuracy", per_class + note(f"{setting}: each class's queries over every "
                                                                  "episode it was drawn in.")),
        Section("confusion", "Confusion matrix", _png(folder / "confusion.png", "confusion matrix",
                                                      f"{setting}: rows are the true classes, each divided by its "
                                                      "queries; columns the predicted classes.")),
        Section("errors", "Queries it got wrong", _png(folder / "errors.png", "wrong queries",
                                                       f"{setting}: the first wrong queries, beside a support image "
                                                       "of the class predicted and one of the true class.")),
    ]
    return write_page(folder / "report.html", f"Few-shot report: {folder.name}",
                      f"{saved['backbone']} on {saved['data']}", sections)


def _png(path: Path, alt: str, caption: str) -> Markup:
    return png_html(path, alt, caption) if path.is_file() else note("none: every query was right")
