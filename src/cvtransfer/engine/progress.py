"""What training prints: one line per epoch (a progress bar too, on a terminal), and no library chatter.

    epoch 3/10  train_loss 0.4123  train_accuracy 0.8750  val_loss 0.5012  val_accuracy 0.8333  12.3s

The lines are printed on global rank 0 only, whether or not a bar is shown; a TQDM bar is used only
when ``--progress`` is on and stdout is a terminal (redirected to a file or a CI log, a bar would
repeat every update on one line).
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import IO

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

EPOCH_METRICS = ("train_loss", "train_accuracy", "train_miou", "val_loss", "val_accuracy", "val_miou", "val_map",
                 "target_accuracy")
LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")
LIBRARY_WARNINGS = ".*(does not have many workers|LeafSpec|in eval mode|exists and is not empty).*"
FOLDER_LOGGER = "cvtransfer.run_folder"  # "run folder: ..."; the CLI prints it on stdout itself


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default stdout, where Lightning's bars go) is an interactive terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def use_progress_bar(progress: bool) -> bool:
    """A TQDM bar only when asked for and stdout is a terminal."""
    return progress and is_terminal()


def epoch_line(epoch: int, epochs: int, metrics: dict[str, float], seconds: float) -> str:
    """``epoch k/N  name value ...  seconds`` for the metrics present (in EPOCH_METRICS order)."""
    parts = [f"epoch {epoch}/{epochs}"]
    parts += [f"{name} {metrics[name]:.4f}" for name in EPOCH_METRICS if name in metrics]
    parts.append(f"{seconds:.1f}s")
    return "  ".join(parts)


class EpochLines(pl.Callback):
    """Prints :func:`epoch_line` after each training epoch (and its validation), on global rank 0."""

    def __init__(self) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()
                   if name in EPOCH_METRICS and value.numel() == 1}
        line = epoch_line(trainer.current_epoch + 1, trainer.max_epochs or 0, metrics,
                          time.perf_counter() - self._started)
        bar = trainer.progress_bar_callback
        if isinstance(bar, TQDMProgressBar) and bar.is_enabled:
            bar.print(line)  # above the live bar, which would otherwise overwrite it
        else:
            print(line, flush=True)


def quiet_libraries() -> None:
    """Lightning's info messages ("GPU available", "`Trainer.fit` stopped", "Restoring states") and its
    known harmless warnings are not shown; warnings and errors still are.

    Idempotent and cheap, so every entry point calls it: the warning filter is added only when missing
    (re-adding one resets Python's record of warnings already shown, which are then shown again).
    """
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)
    if not any(action == "ignore" and message is not None and message.pattern == LIBRARY_WARNINGS
               for action, message, *_ in warnings.filters):
        warnings.filterwarnings("ignore", message=LIBRARY_WARNINGS)


def console_logging() -> None:
    """Show cvtransfer's own messages (data, metrics, diagnosis, run folder) when nothing configured logging.

    The CLI configures logging itself; from Python this makes ``cvtransfer.fit`` report like the CLI. A
    program that set up logging (any handler on the root or ``cvtransfer`` logger) is left as it is, and
    so is the handler of an earlier call: idempotent and cheap, so every entry point calls it.
    """
    package = logging.getLogger("cvtransfer")
    if logging.getLogger().handlers or package.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    package.addHandler(handler)
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)


def announce_run_folder(path: str | Path) -> None:
    """Log ``run folder: PATH`` at the end of a run (the CLI silences it and prints it on stdout)."""
    logging.getLogger(FOLDER_LOGGER).info("run folder: %s", path)
