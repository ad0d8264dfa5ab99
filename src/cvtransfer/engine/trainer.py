"""The Lightning Trainer factory: devices, precision, checkpoints, early stopping, history."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar

from cvtransfer.config import Config
from cvtransfer.engine.checkpoints import AtomicCheckpointIO
from cvtransfer.engine.history import HistoryWriter
from cvtransfer.engine.progress import EpochLines, console_logging, quiet_libraries, use_progress_bar
from cvtransfer.errors import ConfigError

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


def check_devices(config: Config) -> None:
    """Refuse more CPU training processes than the machine has cores (when no GPU will be used).

    Each process trains a full replica of the model; more of them than cores only slows training down.
    """
    if config.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--accelerator {config.accelerator}: this machine has no CUDA GPU that torch can use: "
                          "use --accelerator auto or cpu")
    gpu = config.accelerator == "auto" and torch.cuda.is_available()
    if config.accelerator not in ("cpu", "auto") or gpu:
        return
    devices = _devices(config.devices)
    count = devices if isinstance(devices, int) else len(devices) if isinstance(devices, list) else None
    cores = os.cpu_count() or 1
    if count is not None and count > cores:
        raise ConfigError(
            f"--devices {config.devices} would start {count} CPU training processes but this machine has "
            f"{cores} CPU cores: use --devices {cores} or fewer (each process trains a full copy of the "
            "model, so more processes than cores only slows training down)")


def build_trainer(
    config: Config,
    run_dir: Path,
    callbacks: list[pl.Callback] | None = None,
    extra_metrics: tuple[str, ...] = (),
    monitor: tuple[str | None, str] | None = None,
) -> pl.Trainer:
    """A Trainer writing checkpoints and history into ``run_dir``.

    ``monitor``: (metric, "min" or "max") that picks best.ckpt, instead of ``--monitor``; a metric of
    None keeps the last epoch as the best. Prints one line per epoch (:class:`EpochLines`), with a bar
    only on a terminal, and keeps Lightning's info messages out of the output.
    """
    check_devices(config)
    quiet_libraries()
    console_logging()
    metric, mode = monitor or (config.monitor, "min" if config.monitor.endswith("loss") else "max")
    best = ModelCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, filename="best", monitor=metric, mode=mode,
                           save_top_k=1, enable_version_counter=False)
    # A second checkpoint, written every epoch whatever the metric did: what --resume continues from
    # (Lightning's save_last only follows a top-k save).
    last = ModelCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    all_callbacks: list[pl.Callback] = [best, last, HistoryWriter(run_dir / "history.csv", extra_metrics),
                                        EpochLines()]
    if config.early_stop and metric is not None:
        all_callbacks.append(EarlyStopping(monitor=metric, mode=mode, patience=config.early_stop))
    bar = use_progress_bar(config.progress)
    if bar:
        all_callbacks.append(TQDMProgressBar(leave=False))
    return pl.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=_devices(config.devices),
        num_nodes=config.num_nodes,
        strategy=config.distributed,
        precision=resolve_precision(config.precision, config.accelerator),  # type: ignore[arg-type]  # a valid name
        accumulate_grad_batches=config.accumulate,
        gradient_clip_val=config.grad_clip or None,
        callbacks=all_callbacks + list(callbacks or []),
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=run_dir,
        log_every_n_steps=1,
    )
