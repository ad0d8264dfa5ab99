"""The Lightning Trainer factory: devices, precision, checkpoints, early stopping, history."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar

from cvtransfer.config import Config
from cvtransfer.engine.checkpoints import AtomicCheckpointIO
from cvtransfer.engine.history import HistoryWriter

CHECKPOINT_DIR = "checkpoints"
PRECISIONS = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """Lightning precision string; ``auto`` is bf16-mixed on a GPU that supports it, else 32-true."""
    if precision != "auto":
        return PRECISIONS[precision]
    on_gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def _devices(value: str) -> str | int | list[int]:
    if value.isdigit():
        return int(value)
    if "," in value:
        return [int(v) for v in value.split(",") if v.strip()]
    return value


def build_trainer(
    config: Config,
    run_dir: Path,
    callbacks: list[pl.Callback] | None = None,
    extra_metrics: tuple[str, ...] = (),
    monitor: tuple[str | None, str] | None = None,
) -> pl.Trainer:
    """A Trainer writing checkpoints and history into ``run_dir``.

    ``monitor``: (metric, "min" or "max") that picks best.ckpt, instead of ``--monitor``; a metric of
    None keeps the last epoch as the best.
    """
    metric, mode = monitor or (config.monitor, "min" if config.monitor.endswith("loss") else "max")
    best = ModelCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, filename="best", monitor=metric, mode=mode,
                           save_top_k=1, enable_version_counter=False)
    # A second checkpoint, written every epoch whatever the metric did: what --resume continues from
    # (Lightning's save_last only follows a top-k save).
    last = ModelCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    all_callbacks: list[pl.Callback] = [best, last, HistoryWriter(run_dir / "history.csv", extra_metrics)]
    if config.early_stop and metric is not None:
        all_callbacks.append(EarlyStopping(monitor=metric, mode=mode, patience=config.early_stop))
    if config.progress:
        all_callbacks.append(TQDMProgressBar(leave=False))
    return pl.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=_devices(config.devices),
        num_nodes=config.num_nodes,
        strategy=config.distributed,
        precision=resolve_precision(config.precision, config.accelerator),
        accumulate_grad_batches=config.accumulate,
        gradient_clip_val=config.grad_clip or None,
        callbacks=all_callbacks + list(callbacks or []),
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=run_dir,
        log_every_n_steps=1,
    )
