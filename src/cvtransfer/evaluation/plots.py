"""The figures of a run: learning curves, confusion matrix, ROC curves (matplotlib, no display needed).

Each ``*_figure`` function returns a figure (the HTML report embeds it); ``plot_*`` saves it as PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import auc, roc_curve

from cvtransfer.evaluation.history import selected_row
from cvtransfer.io import atomic_path

MAX_LEGEND_ENTRIES = 20  # beyond this a legend hides the plot


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _column(history: list[dict[str, float]], name: str) -> list[float] | None:
    """The values of history column ``name`` per epoch, None when it has none."""
    values = [row.get(name, math.nan) for row in history]
    return values if any(not math.isnan(v) for v in values) else None


def _integer_epochs(ax: plt.Axes) -> None:
    """Epoch axes tick whole epochs only."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def curves_figure(history: list[dict[str, float]], title: str = "",
                  selection: tuple[str, str] | None = None, metric_name: str = "accuracy") -> plt.Figure:
    """Loss and the task's metric (accuracy, miou) per epoch, training against validation.

    Adaptation runs (a ``target_accuracy`` column, or ``selection``): training and validation are
    the source's, the target test accuracy is added to the accuracy panel, and ``selection``
    (history column, "min" or "max") gets a third panel with the epoch it selects marked.
    """
    target = _column(history, "target_accuracy")
    scores = _column(history, selection[0]) if selection else None
    adaptation = target is not None or selection is not None
    panels = 3 if scores is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    loss_ax, acc_ax = axes[0], axes[1]
    epochs = [int(row["epoch"]) + 1 for row in history]
    for ax, metric in ((loss_ax, "loss"), (acc_ax, metric_name)):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = _column(history, f"{split}_{metric}")
            if values is not None:
                series = f"{split} (source)" if adaptation else split
                ax.plot(epochs, values, style, markersize=3, label=series)
    if target is not None:
        acc_ax.plot(epochs, target, "-^", markersize=3, label="target test")
    if scores is not None and selection is not None:  # scores come from the selection column
        score_ax = axes[2]
        name, mode = selection
        score_ax.plot(epochs, scores, "-d", markersize=3, color="tab:purple", label=name)
        kept = selected_row(history, name, mode)  # the first best epoch, as the checkpoint callback keeps it
        if kept is not None:
            score_ax.plot([epochs[kept]], [scores[kept]], "*", markersize=12, color="tab:red",
                          label=f"selected (epoch {epochs[kept]})")
        score_ax.set_ylabel(f"{name} ({'lower' if mode == 'min' else 'higher'} is better)")
        score_ax.set_title("Unsupervised selection score (target)", fontsize=10)
    for ax in axes:
        ax.set_xlabel("Epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        _integer_epochs(ax)
    loss_ax.set_ylabel("Cross-entropy loss")
    acc_ax.set_ylabel({"accuracy": "Accuracy", "miou": "mIoU", "map": "mAP"}.get(metric_name, metric_name))
    acc_ax.set_ylim(0, 1.02)
    fig.suptitle(title or "Learning curves")
    fig.tight_layout()
    return fig


def plot_curves(history: list[dict[str, float]], path: str | Path, title: str = "",
                selection: tuple[str, str] | None = None, metric_name: str = "accuracy") -> None:
    """Save :func:`curves_figure` as a PNG."""
    save_figure(curves_figure(history, title, selection=selection, metric_name=metric_name), path)


def confusion_figure(matrix: list[list[int]], class_names: list[str], normalise: bool = False) -> plt.Figure:
    """Confusion matrix, rows true and columns predicted, as counts or row-normalised."""
    counts = np.asarray(matrix, dtype=float)
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalise else counts
    size = max(4.0, 0.5 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class" if normalise else "images")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    if len(class_names) <= 20:
        limit = values.max() / 2 if values.size else 0
        for (i, j), value in np.ndenumerate(values):
            text = f"{value:.2f}" if normalise else f"{int(value)}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if value > limit else "black")
    ax.set_title("Confusion matrix" + (" (normalised by row)" if normalise else " (image counts)"))
    return fig


def plot_confusion(matrix: list[list[int]], class_names: list[str], path: str | Path, normalise: bool = False) -> None:
    """Save :func:`confusion_figure` as a PNG."""
    save_figure(confusion_figure(matrix, class_names, normalise), path)


def roc_figure(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> plt.Figure:
    """One-vs-rest ROC curve of every class that has positives and negatives, with its AUC."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    colors = class_colors(len(class_names))
    for index, name in enumerate(class_names):
        positives = labels == index
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = roc_curve(positives, probs[:, index])
        ax.plot(fpr, tpr, color=colors[index], lw=1.5, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title("ROC curves, one class vs the rest")
    ax.grid(alpha=0.3)
    if len(class_names) <= MAX_LEGEND_ENTRIES:
        ax.legend(loc="lower right", fontsize=8)
    return fig


def comparison_figure(histories: Sequence[list[dict[str, float]]], names: Sequence[str]) -> plt.Figure:
    """Validation loss and accuracy per epoch of several runs, overlaid (training loss dotted)."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4.2))
    colors = class_colors(len(names))
    for history, name, color in zip(histories, names, colors):
        epochs = [int(row["epoch"]) + 1 for row in history]
        loss_ax.plot(epochs, [row.get("val_loss", math.nan) for row in history], "-o", ms=3, color=color, label=name)
        loss_ax.plot(epochs, [row.get("train_loss", math.nan) for row in history], ":", color=color)
        acc_ax.plot(epochs, [row.get("val_accuracy", math.nan) for row in history], "-o", ms=3, color=color,
                    label=name)
        target = _column(history, "target_accuracy")
        if target is not None:
            acc_ax.plot(epochs, target, "--^", ms=3, color=color)
    loss_ax.set_ylabel("Cross-entropy loss (val solid, train dotted)")
    acc_ax.set_ylabel("Accuracy (val solid, adaptation target dashed)")
    acc_ax.set_ylim(0, 1.02)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("Epoch")
        ax.grid(alpha=0.3)
        _integer_epochs(ax)
    if len(names) <= MAX_LEGEND_ENTRIES:
        acc_ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Learning curves of the compared runs")
    return fig


def class_colors(count: int) -> list[tuple[float, ...]]:
    """``count`` distinct colours: tab10/tab20 while they suffice, then a continuous map."""
    name = "tab10" if count <= 10 else "tab20" if count <= 20 else "turbo"
    cmap = plt.get_cmap(name)
    if count > 20:
        return [cmap(i / max(count - 1, 1)) for i in range(count)]
    return [cmap(i) for i in range(count)]
