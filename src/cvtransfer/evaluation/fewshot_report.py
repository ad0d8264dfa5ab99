"""What ``fewshot-eval`` shows beyond its table: the per-class accuracy and confusion of one method over all
its episodes, the queries it got wrong beside the support images, and report.html of the folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from markupsafe import Markup

from cvtransfer.data.images import load_rgb
from cvtransfer.evaluation.html import Section, cards_html, note, png_html, table_html, write_page
from cvtransfer.evaluation.plots import plot_confusion
from cvtransfer.evaluation.segmentation import image_grid

if TYPE_CHECKING:
    from cvtransfer.run import Run

ERRORS_SHOWN = 6  # wrong queries drawn in errors.png
CONFUSION_CLASSES = 30  # confusion.png of more classes shows those with the most wrong queries
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


def confused_classes(confusion: np.ndarray, count: int) -> list[int]:
    """Every class with queries when there are at most ``count``, else the ``count`` with the most wrong queries
    (in class order)."""
    asked = np.flatnonzero(confusion.sum(axis=1))
    if len(asked) <= count:
        return asked.tolist()
    wrong = confusion.sum(axis=1) - np.diag(confusion)
    return sorted(asked[np.argsort(-wrong[asked], kind="stable")[:count]].tolist())


def write_pictures(tally: EpisodeTally, class_names: list[str], paths: list[str], folder: Path,
                   max_pixels: int) -> None:
    """confusion.png (rows: true classes, each divided by its queries; of many classes, the CONFUSION_CLASSES
    with the most wrong queries) and errors.png (wrong queries)."""
    shown = confused_classes(tally.confusion, CONFUSION_CLASSES)
    matrix, names = tally.confusion[np.ix_(shown, shown)], [class_names[i] for i in shown]
    if len(shown) < len(np.flatnonzero(tally.confusion.sum(axis=1))):  # a last row and column: the other classes
        others = tally.confusion[shown].sum(axis=1) - matrix.sum(axis=1)
        matrix = np.pad(np.column_stack([matrix, others]), ((0, 1), (0, 0)))
        names = names + ["(other classes)"]
    plot_confusion(matrix.tolist(), names, folder / "confusion.png", normalise=True)
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
    table, per_class = results_table(rows), per_class_table(detail)
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


def results_table(rows: list[dict[str, Any]]) -> Markup:
    """One line per method and setting: accuracy, its 95% interval, seconds."""
    return table_html(["method", "setting", "accuracy", "95% interval", "seconds"],
                      [[row["method"], f"{row['ways']}-way {row['shots']}-shot", f"{100 * row['accuracy']:.1f}%",
                        "n/a" if row["ci95"] is None else f"+- {100 * row['ci95']:.1f}", f"{row['seconds']:.1f}"]
                       for row in rows],
                      numeric=[False, False, True, True, True])


def per_class_table(detail: dict[str, Any]) -> Markup:
    """Each class's query accuracy over the episodes it was drawn in."""
    return table_html(["class", "accuracy", "queries"],
                      [[row["class"], "n/a" if row["accuracy"] is None else f"{100 * row['accuracy']:.1f}%",
                        row["queries"]] for row in detail["per_class"] if row["queries"]],
                      numeric=[False, True, True])


def fewshot_run_sections(run: Run, title: str, seconds: float | None) -> list[tuple[str, str, Callable[[], Markup]]]:
    """report.html's sections of a ``--task fewshot`` run, from its metrics.json, history and pictures."""
    from cvtransfer.evaluation.html import figure_html
    from cvtransfer.evaluation.plots import curves_figure

    def metrics() -> dict[str, Any]:
        found = run.metrics
        if "results" not in found:
            raise FileNotFoundError(f"{run.path / 'metrics.json'} has no episode results: re-run cvtransfer evaluate")
        return found

    def summary() -> Markup:
        found = metrics()
        config = run.config
        cards = [(f"{100 * row['accuracy']:.1f}%", f"{row['ways']}-way {row['shots']}-shot") for row in found["results"]]
        cards += [(str(found["num_classes"]), f"{found['split']} classes"), (str(len(run.history)), "epochs"),
                  ("n/a" if seconds is None else f"{seconds:.1f} s", "training time")]
        return cards_html(cards) + results_table(found["results"]) + note(
            f"{title}: trained on episodes of {config.train_ways or config.ways} training classes; evaluated by "
            f"ProtoNet on {found['episodes']} seeded episodes of the {found['split']} classes, which training never "
            f"saw; BatchNorm: {found['bn_stats']} statistics. The interval is 1.96 standard errors over episodes.")

    def data() -> Markup:
        splits = run.image_splits()
        rows = [(name, len({y for _, y in splits.split(name)}), len(splits.split(name)))
                for name in ("train", "val", "test") if splits.split(name)]
        return table_html(("split", "classes", "images"), rows, numeric=[False, True, True]) + note(
            f"Splits by class (data: {run.config.data}): validation and test classes are never trained on.")

    def curves() -> Markup:
        if not run.history:
            return note("No history.csv: this run has no learning curves.")
        return figure_html(curves_figure(run.history, f"Learning curves: {title}"), "learning curves",
                           "Episode loss and query accuracy per epoch: training episodes of the training classes "
                           "against the same validation episodes of the validation classes every epoch.")

    shots = lambda: f"ProtoNet, {metrics()['ways']}-way {metrics()['detail']['shots']}-shot"  # noqa: E731
    return [
        ("summary", "Summary", summary),
        ("data", "Data", data),
        ("curves", "Learning curves", curves),
        ("per-class", "Per-class accuracy", lambda: per_class_table(metrics()["detail"]) + note(
            f"{shots()}: each class's queries over every episode it was drawn in.")),
        ("confusion", "Confusion matrix", lambda: _png(run.path / "confusion.png", "confusion matrix",
                                                       f"{shots()}: rows are the true classes, each divided by its "
                                                       "queries; columns the predicted classes.")),
        ("errors", "Queries it got wrong", lambda: _png(run.path / "errors.png", "wrong queries",
                                                        f"{shots()}: the first wrong queries, beside a support image "
                                                        "of the class predicted and one of the true class.")),
    ]


def _png(path: Path, alt: str, caption: str) -> Markup:
    return png_html(path, alt, caption) if path.is_file() else note("none: every query was right")
