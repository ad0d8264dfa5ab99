"""Per-epoch history written to history.csv as training goes (kept across resumes)."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from cvtransfer.io import atomic_write_text

COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"]


def read_history(path: str | Path) -> list[dict[str, float]]:
    """Rows of a history.csv as floats (missing values are NaN)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
                for row in csv.DictReader(handle)]


def selected_row(history: list[dict[str, float]], column: str, mode: str) -> int | None:
    """Index of the row the best checkpoint keeps by ``column`` ("min" or "max"): the first best, NaN skipped."""
    known = [(row[column], index) for index, row in enumerate(history)
             if not math.isnan(row.get(column, math.nan))]
    if not known:
        return None
    return min(known, key=lambda pair: (pair[0] if mode == "min" else -pair[0], pair[1]))[1]


def write_history(path: str | Path, rows: list[dict[str, Any]]) -> None:
    columns = COLUMNS + sorted({k for row in rows for k in row} - set(COLUMNS))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


class HistoryWriter(pl.Callback):
    """Appends one row per epoch: losses, accuracies, the head's LR and the epoch time."""

    def __init__(self, path: str | Path, extra_metrics: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.extra_metrics = extra_metrics
        self._started = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row: dict[str, Any] = {"epoch": trainer.current_epoch}
        for name in [c for c in COLUMNS if c not in ("epoch", "lr", "seconds")] + list(self.extra_metrics) \
                + ["train_penalty"]:  # the strategy's penalty (l2sp), when it has one
            if name in metrics:
                row[name] = float(metrics[name])
        row["lr"] = max(group["lr"] for group in trainer.optimizers[0].param_groups)
        row["seconds"] = time.perf_counter() - self._started
        rows = [r for r in read_history(self.path) if r["epoch"] < trainer.current_epoch]
        rows = [{**r, "epoch": int(r["epoch"])} for r in rows]
        write_history(self.path, rows + [row])
