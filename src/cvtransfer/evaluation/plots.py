"""The figures of a run: learning curves and the confusion matrix (matplotlib, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cvtransfer.io import atomic_path  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_curves(history: list[dict[str, float]], path: str | Path, title: str = "") -> None:
    """Loss and accuracy per epoch, training against validation."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [row["epoch"] + 1 for row in history]
    for ax, metric, label in ((loss_ax, "loss", "Cross-entropy loss"), (acc_ax, "accuracy", "Accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [row.get(f"{split}_{metric}", math.nan) for row in history]
            if any(not math.isnan(v) for v in values):
                ax.plot(epochs, values, style, markersize=3, label=split)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    acc_ax.set_ylim(0, 1.02)
    fig.suptitle(title or "Learning curves")
    save_figure(fig, path)


def plot_confusion(matrix: list[list[int]], class_names: list[str], path: str | Path, normalise: bool = False) -> None:
    """Confusion matrix, rows true and columns predicted, as counts or row-normalised."""
    counts = np.asarray(matrix, dtype=float)
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalise else counts
    size = max(4.0, 0.5 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(values, cmap="Blues", vmin=0)
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
    ax.set_title("Confusion matrix" + (" (normalised)" if normalise else ""))
    save_figure(fig, path)
