"""The LR range test (Smith 2015, fastai's lr_find) through Lightning's Tuner, with our own suggestion.

Lightning runs the test (one batch per LR, growing exponentially, stopped when the loss diverges) and
restores the model afterwards; the suggestion is computed here. Lightning's ``suggestion()`` takes the
steepest slope per unit of LR, which favours the smallest LRs of a noisy curve; ours, as fastai's, is
the steepest descent of the smoothed loss against log10(LR), with fastai's "minimum / 10" recorded too.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.tuner import Tuner

from cvtransfer.config import Config
from cvtransfer.data.folders import discover
from cvtransfer.engine.checks import check_options, default_run_dir
from cvtransfer.engine.progress import quiet_libraries, use_progress_bar
from cvtransfer.engine.runner import prepare
from cvtransfer.engine.trainer import resolve_precision
from cvtransfer.errors import ConfigError, CvTransferError
from cvtransfer.evaluation.plots import plt, save_figure
from cvtransfer.io import write_json

log = logging.getLogger(__name__)

DIVERGED = 4.0  # the loss has diverged once the smoothed loss exceeds this multiple of its minimum so far
SKIP_START = 0.1  # fraction of the first points ignored (at the tiniest LRs the curve is flat and noisy)


def smooth_losses(losses: list[float] | np.ndarray, beta: float | None = None) -> np.ndarray:
    """fastai's exponential moving average (bias-corrected), run forward then backward.

    The backward pass undoes the forward one's lag (1 / (1 - beta) steps to the right, towards higher
    LRs); ``beta`` defaults to a time constant of 5% of the points. Non-finite losses are carried over.
    """
    values = np.asarray(losses, dtype=float)
    if beta is None:
        beta = 1.0 - 1.0 / max(1.0, 0.05 * len(values))

    def ema(series: np.ndarray) -> np.ndarray:
        out, average, weight = np.empty_like(series), 0.0, 0.0
        for i, value in enumerate(series):
            if math.isfinite(value):
                average = beta * average + (1 - beta) * value
                weight = beta * weight + (1 - beta)
            out[i] = average / weight if weight > 0 else value
        return out

    return ema(ema(values)[::-1])[::-1]


def diverged_at(smoothed: np.ndarray, threshold: float = DIVERGED) -> int:
    """Index of the first point where the loss diverged (non-finite, or ``threshold`` x its minimum yet)."""
    best = math.inf
    for i, value in enumerate(smoothed):
        if not math.isfinite(value) or (i > 0 and value > threshold * best):
            return i
        best = min(best, value)
    return len(smoothed)


def suggest_lr(lrs: list[float] | np.ndarray, losses: list[float] | np.ndarray,
               skip_start: float = SKIP_START) -> dict[str, Any]:
    """The LR at the steepest descent of the smoothed loss against log10(LR), and fastai's minimum / 10.

    ``losses`` are the raw per-batch losses at ``lrs``; points from where the loss diverged on and the
    first ``skip_start`` of them are ignored. Returns steepest, minimum_10 (None when too few points),
    the rule used ("steepest") and the smoothed losses.
    """
    lrs = np.asarray(lrs, dtype=float)
    smoothed = smooth_losses(losses)
    end = diverged_at(smoothed)
    start = min(int(len(lrs) * skip_start), max(0, end - 3))
    result: dict[str, Any] = {"rule": "steepest", "steepest": None, "minimum_10": None,
                              "smoothed_losses": smoothed.tolist(), "used": [start, end]}
    if end - start < 3:
        return result
    x, y = np.log10(lrs[start:end]), smoothed[start:end]
    slopes = np.gradient(y, x)
    result["steepest"] = float(lrs[start + int(np.argmin(slopes))])
    result["minimum_10"] = float(lrs[start + int(np.argmin(y))] / 10)
    return result


def lr_find_figure(lrs: list[float], losses: list[float], found: dict[str, Any], title: str) -> plt.Figure:
    """Raw and smoothed loss against the LR (log axis), the suggestion and minimum / 10 marked."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lrs, losses, color="0.75", linewidth=1, label="loss per batch")
    smoothed = np.asarray(found["smoothed_losses"])
    start, end = found["used"]
    ax.plot(lrs[:end], smoothed[:end], color="C0", linewidth=2, label="smoothed")
    marks = (("steepest", "C3", "suggestion (steepest descent)"), ("minimum_10", "C2", "minimum / 10"))
    for key, style, label in marks:
        if found[key] is not None:
            ax.axvline(found[key], color=style, linestyle="--", label=f"{label}: {found[key]:.3g}")
    if found["steepest"] is not None:
        index = int(np.argmin(np.abs(np.asarray(lrs) - found["steepest"])))
        ax.plot([lrs[index]], [smoothed[index]], "o", color="C3", markersize=8)
    finite = smoothed[start:end][np.isfinite(smoothed[start:end])]
    if finite.size:  # the diverged tail would squash the interesting part
        low, high = float(finite.min()), float(finite.max())
        ax.set_ylim(low - 0.1 * (high - low + 1e-8), high + 0.3 * (high - low + 1e-8))
    ax.set_xscale("log")
    ax.set_xlabel("Learning rate (log scale)")
    ax.set_ylabel("Training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


class _Recorder:
    """Module hooks kept through Lightning's search (which replaces the Trainer's callbacks): the raw
    loss of every batch, and Lightning's own "Finding best initial lr" bar turned off unless wanted."""

    def __init__(self, module: pl.LightningModule, show_bar: bool) -> None:
        self.module, self.show_bar = module, show_bar
        self.losses: list[float] = []

    def on_train_start(self) -> None:
        if not self.show_bar:
            for callback in getattr(self.module.trainer, "callbacks", []):
                if hasattr(callback, "progress_bar_refresh_rate"):
                    callback.progress_bar_refresh_rate = 0

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss) if loss is not None else math.nan)


def lr_find(config: Config, min_lr: float = 1e-7, max_lr: float = 1.0, steps: int = 100) -> dict[str, Any]:
    """Train ``steps`` batches at exponentially growing LRs; write lr_find.json and lr_find.png in ``out``."""
    out = Path(config.out) if config.out else default_run_dir(config, prefix="lr-find-")
    quiet_libraries()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    if config.data is None:
        raise ConfigError("lr-find needs DATA_DIR (data=)")
    check_options(config)  # before the data is scanned
    splits = discover(config.data, config.val_split, config.test_split, config.seed, config.max_image_pixels)
    setup = prepare(config, splits)
    out.mkdir(parents=True, exist_ok=True)  # only once the data and options passed every check
    module = setup.module()
    show_bar = use_progress_bar(config.progress)
    recorder = _Recorder(module, show_bar)
    module.on_train_start = recorder.on_train_start  # type: ignore[method-assign]
    module.on_train_batch_end = recorder.on_train_batch_end  # type: ignore[method-assign]
    trainer = pl.Trainer(
        accelerator=config.accelerator, devices=1,
        precision=resolve_precision(config.precision, config.accelerator),  # type: ignore[arg-type]  # a valid name
        logger=False,
        enable_checkpointing=False, enable_progress_bar=show_bar, enable_model_summary=False,
        default_root_dir=out, max_epochs=steps,  # at least a batch per epoch: the search ends after ``steps``
    )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*validation_step` but have no `val_dataloader.*")
            finder = Tuner(trainer).lr_find(module, train_dataloaders=setup.train_loader, min_lr=min_lr,
                                            max_lr=max_lr, num_training=steps, update_attr=False,
                                            early_stop_threshold=DIVERGED)
    finally:
        for leftover in out.glob(".lr_find_*.ckpt"):
            leftover.unlink(missing_ok=True)
    if finder is None:
        raise CvTransferError("the LR range test did not run (Lightning returned no result)")
    lrs = list(finder.results["lr"])
    losses = recorder.losses[:len(lrs)]
    lrs = lrs[:len(losses)]
    found = suggest_lr(lrs, losses)
    title = f"LR range test: {config.backbone} / {config.strategy}"
    save_figure(lr_find_figure(lrs, losses, found, title), out / "lr_find.png")
    result = {"suggestion": found["steepest"] if found["steepest"] is not None else found["minimum_10"],
              "rule": "steepest" if found["steepest"] is not None else "minimum_10",
              "steepest": found["steepest"], "minimum_10": found["minimum_10"],
              "plot": str(out / "lr_find.png"),
              "lrs": lrs, "losses": losses, "smoothed_losses": found["smoothed_losses"]}
    write_json(out / "lr_find.json", result)
    return result
