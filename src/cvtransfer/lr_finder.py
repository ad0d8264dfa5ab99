"""The LR range test (Smith 2015, fastai's lr_find) through Lightning's Tuner."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.tuner import Tuner

from cvtransfer.config import Config
from cvtransfer.data.folders import discover
from cvtransfer.engine.trainer import resolve_precision
from cvtransfer.evaluation.plots import save_figure
from cvtransfer.fitting import default_run_dir, prepare_training
from cvtransfer.io import write_json

log = logging.getLogger(__name__)


def lr_find(config: Config, min_lr: float = 1e-7, max_lr: float = 1.0, steps: int = 100) -> dict[str, Any]:
    """Train ``steps`` batches at exponentially growing LRs; return the suggestion and write a plot."""
    out = Path(config.out) if config.out else default_run_dir(config, prefix="lr-find-")
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    splits = discover(config.data, config.val_split, config.test_split, config.seed, config.max_image_pixels)
    setup = prepare_training(config, splits)
    module = setup.module(config, len(splits.classes))
    trainer = pl.Trainer(
        accelerator=config.accelerator, devices=1, precision=resolve_precision(config.precision, config.accelerator),
        logger=False, enable_checkpointing=False, enable_progress_bar=config.progress, enable_model_summary=False,
        default_root_dir=out,
    )
    finder = Tuner(trainer).lr_find(module, train_dataloaders=setup.train_loader, min_lr=min_lr, max_lr=max_lr,
                                    num_training=steps, update_attr=False)
    suggestion = finder.suggestion()
    figure = finder.plot(suggest=True)
    figure.axes[0].set_title(f"LR range test: {config.backbone} / {config.strategy}")
    save_figure(figure, out / "lr_find.png")
    result = {"suggestion": suggestion, "plot": str(out / "lr_find.png"),
              "lrs": finder.results["lr"], "losses": finder.results["loss"]}
    write_json(out / "lr_find.json", result)
    log.info("suggested lr %.3g", suggestion or float("nan"))
    return result
