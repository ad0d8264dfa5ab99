"""Learning-curve figures: whole-epoch ticks; adaptation runs add target accuracy and the selection score."""

from __future__ import annotations

import math
from collections.abc import Callable

import matplotlib.pyplot as plt
import pytest

from cvtransfer.evaluation.plots import comparison_figure, curves_figure

FIT_HISTORY = [{"epoch": float(e), "train_loss": 1.0 - 0.2 * e, "train_accuracy": 0.5 + 0.1 * e,
                "val_loss": 1.1 - 0.1 * e, "val_accuracy": 0.5 + 0.05 * e, "seconds": 1.0}
               for e in range(2)]  # epochs as floats, as read_history gives them
ADAPT_HISTORY = [{**row, "target_accuracy": 0.3 + 0.2 * row["epoch"], "val_snd": math.nan,
                  "val_entropy": [0.9, 0.4, 0.6][int(row["epoch"])]}
                 for row in FIT_HISTORY + [{**FIT_HISTORY[1], "epoch": 2.0}]]


def labels(ax: plt.Axes) -> list[str]:
    return [line.get_label() for line in ax.get_lines()]


@pytest.mark.parametrize("make", [
    lambda: curves_figure(FIT_HISTORY),
    lambda: curves_figure(ADAPT_HISTORY, "", ("val_entropy", "min")),
    lambda: comparison_figure([FIT_HISTORY, ADAPT_HISTORY], ["a", "b"]),
], ids=["fit", "adaptation", "comparison"])
def test_epoch_axes_tick_whole_epochs(make: Callable[[], plt.Figure]) -> None:
    fig = make()
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    plt.close(fig)


def test_fit_curves_are_train_against_val() -> None:
    fig = curves_figure(FIT_HISTORY)
    assert len(fig.axes) == 2 and labels(fig.axes[1]) == ["train", "val"]
    plt.close(fig)


def test_adaptation_curves_add_target_accuracy_and_the_selection_score() -> None:
    fig = curves_figure(ADAPT_HISTORY, "", selection=("val_entropy", "min"))
    _loss_ax, acc_ax, score_ax = fig.axes
    assert labels(acc_ax) == ["train (source)", "val (source)", "target test"]
    assert list(acc_ax.get_lines()[2].get_ydata()) == pytest.approx([0.3, 0.5, 0.7])
    assert labels(score_ax) == ["val_entropy", "selected (epoch 2)"]  # entropy: lowest is best, epoch index 1
    assert "lower is better" in score_ax.get_ylabel()
    plt.close(fig)
    fig = curves_figure(ADAPT_HISTORY, "", selection=("val_snd", "max"))  # a score never computed: no panel
    assert len(fig.axes) == 2
    plt.close(fig)
