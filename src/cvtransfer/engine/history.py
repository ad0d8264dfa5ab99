"""Per-epoch history written to history.csv as training goes (kept across resumes)."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from cvtransfer.evaluation.history import read_history, selected_row
from cvtransfer.io import atomic_write_text

__all__ = ["COLUMNS", "HistoryWriter", "read_history", "selected_row", "write_history"]

# The order of history.csv's first columns (others follow by name); which exist depends on the task and terms.
COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"]


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
        for name in ["train_loss", "val_loss", *self.extra_metrics]:  # the task's and the loss terms' columns
            if name in metrics:
                row[name] = float(metrics[name])
        row["lr"] = max(group["lr"] for group in trainer.optimizers[0].param_groups)
        row["seconds"] = time.perf_counter() - self._started
        rows = [r for r in read_history(self.path) if r["epoch"] < trainer.current_epoch]
        rows = [{**r, "epoch": int(r["epoch"])} for r in rows]
        write_history(self.path, rows + [row])
