"""One line saying whether a run over- or under-fitted, from its learning curves."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Diagnosis:
    verdict: str  # "overfitting", "underfitting", "good fit" or "unknown"
    message: str
    signals: dict[str, float]


OVERFIT_GAP = 0.10  # train accuracy above val accuracy by this much
VAL_LOSS_RISE = 0.10  # val loss this fraction above its minimum at the end
LARGE_GAP = 0.20  # a gap this large is overfitting even while val loss still falls
UNDERFIT_TRAIN_ACCURACY = 0.80
UNDERFIT_TRAIN = {"accuracy": UNDERFIT_TRAIN_ACCURACY, "miou": 0.50}  # per task metric (mIoU runs lower)


def diagnose(history: list[dict[str, float]], stopped_early: bool = False, epochs_apply: bool = True,
             metric: str = "accuracy") -> Diagnosis:
    """Compare the final train and val ``metric`` (the task's: accuracy, miou) and the val-loss trend.

    ``stopped_early``: early stopping ended the run, so more epochs are not suggested;
    ``epochs_apply``: False for a head fitted once by a solver (logistic, svm), which has no epochs.
    """
    rows = [r for r in history if not math.isnan(r.get("val_loss", math.nan))]
    if not rows:
        return Diagnosis("unknown", "no validation history to diagnose", {})
    last = rows[-1]
    train_acc = last.get(f"train_{metric}", math.nan)
    val_acc = last.get(f"val_{metric}", math.nan)
    label = {"accuracy": "accuracy", "miou": "mIoU", "map": "mAP"}.get(metric, metric)
    best_val_loss = min(r["val_loss"] for r in rows)
    rise = (last["val_loss"] - best_val_loss) / max(best_val_loss, 1e-8)
    gap = train_acc - val_acc
    signals = {f"train_{metric}": train_acc, f"val_{metric}": val_acc, f"{metric}_gap": gap,
               "val_loss_rise_from_min": rise, "epochs": float(len(rows))}
    if math.isnan(train_acc):  # not measured on the training batches (a detector's mAP): the val loss alone
        if rise > VAL_LOSS_RISE:
            return Diagnosis("overfitting", f"overfitting: val loss {rise:.0%} above its minimum (val {label} "
                             f"{val_acc:.2f}); try more augmentation, more data, a smaller --lr or --early-stop",
                             signals)
        return Diagnosis("good fit", f"no sign of overfitting: val loss within {VAL_LOSS_RISE:.0%} of its minimum, "
                         f"val {label} {val_acc:.2f} (train {label} is not measured)", signals)
    if not math.isnan(gap) and gap > OVERFIT_GAP and (rise > VAL_LOSS_RISE or gap > LARGE_GAP):
        trend = f"val loss {rise:.0%} above its minimum" if rise > VAL_LOSS_RISE else "a wide gap"
        message = (f"overfitting: train {label} {train_acc:.2f} vs val {val_acc:.2f}, {trend}; try more "
                   "augmentation, more data, l2sp, a smaller --lr or --early-stop")
        return Diagnosis("overfitting", message, signals)
    if not math.isnan(train_acc) and train_acc < UNDERFIT_TRAIN.get(metric, UNDERFIT_TRAIN_ACCURACY):
        if stopped_early:
            message = (f"underfitting: train {label} only {train_acc:.2f} and early stopping ended the run "
                       f"(after {len(history)} epochs); try a higher --lr, a longer --early-stop patience, or "
                       "unfreezing more of the backbone")
        elif not epochs_apply:
            message = (f"underfitting: train {label} only {train_acc:.2f} with the frozen features; try "
                       "fine-tuning the backbone (--strategy gradual or full)")
        else:
            message = (f"underfitting: train {label} only {train_acc:.2f}; try more epochs, a higher --lr, "
                       "or unfreezing more of the backbone")
        return Diagnosis("underfitting", message, signals)
    return Diagnosis("good fit", f"good fit: train {label} {train_acc:.2f}, val {val_acc:.2f}", signals)
