"""Metrics against values computed by hand, and the fit diagnosis."""

from __future__ import annotations

import pytest
import torch

from cvtransfer.evaluation.diagnosis import diagnose
from cvtransfer.evaluation.metrics import classification_metrics


def test_metrics_match_hand_computation() -> None:
    # true: a a b b c ; predicted: a b b b a
    probs = torch.tensor([[.8, .1, .1], [.3, .6, .1], [.1, .8, .1], [.2, .7, .1], [.5, .2, .3]])
    targets = torch.tensor([0, 0, 1, 1, 2])
    m = classification_metrics(probs, targets, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    # recall a=1/2 b=1 c=0 ; precision a=1/2 b=2/3 c=0
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["precision_macro"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert m["per_class"]["b"]["f1"] == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["per_class"]["c"]["support"] == 1
    assert 0 <= m["roc_auc"] <= 1


def test_perfect_scores_give_auc_one() -> None:
    probs = torch.eye(3)[[0, 1, 2, 0]]
    m = classification_metrics(probs, torch.tensor([0, 1, 2, 0]), ["x", "y", "z"])
    assert m["accuracy"] == 1 and m["roc_auc"] == pytest.approx(1.0) and m["f1_macro"] == 1


def test_auc_is_none_with_a_single_class_present() -> None:
    m = classification_metrics(torch.tensor([[.9, .1], [.6, .4]]), torch.tensor([0, 0]), ["x", "y"])
    assert m["roc_auc"] is None and m["balanced_accuracy"] == 1


def _history(train_acc: list[float], val_acc: list[float], val_loss: list[float]) -> list[dict[str, float]]:
    return [{"epoch": i, "train_accuracy": t, "val_accuracy": v, "val_loss": loss}
            for i, (t, v, loss) in enumerate(zip(train_acc, val_acc, val_loss))]


def test_diagnosis_verdicts() -> None:
    assert diagnose(_history([.7, .99], [.7, .75], [.6, .9])).verdict == "overfitting"
    assert diagnose(_history([.3, .4], [.3, .4], [1.2, 1.1])).verdict == "underfitting"
    assert diagnose(_history([.8, .95], [.8, .93], [.5, .3])).verdict == "good fit"
    assert diagnose([]).verdict == "unknown"
