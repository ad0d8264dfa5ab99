"""The one runner: every training command (fit, adapt, auto, the benchmarks) goes through it.

    config -> splits -> model + weights -> strategy -> loss terms -> stream (labelled, features or
    source + target pairs) -> TransferModule + Trainer -> best checkpoint -> run folder
    (model, metrics, curves [, shift.json]) -> report

A method whose loss needs a trained source model first (ADDA) gets a stage: a source-only run of
the same runner in ``RUN_DIR/source_stage``, whose weights start the main run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from cvtransfer.data.box_splits import DetectionSplits
from cvtransfer.data.domains import DomainSplits, feature_width
from cvtransfer.data.folders import DatasetSplits
from cvtransfer.data.loaders import class_loss_weights, for_world_size
from cvtransfer.data.masks import SegmentationSplits
from cvtransfer.engine.checkpoints import load_checkpoint, network_state
from cvtransfer.engine.checks import check_options
from cvtransfer.engine.devices import is_main_process, pick_device
from cvtransfer.engine.domain_shift import SHIFT_FILE, measure_after, measure_before, shift_spaces
from cvtransfer.engine.history import write_history
from cvtransfer.engine.module import TransferModule, history_columns
from cvtransfer.engine.random_state import RandomState, loader_generators
from cvtransfer.engine.splits import SPLITS_FILE, load_domain_splits, load_splits
from cvtransfer.engine.streams import (
    Stream,
    detection_stream,
    episodic_stream,
    feature_stream,
    head_on_features,
    labelled_stream,
    paired_stream,
    segmentation_stream,
)
from cvtransfer.engine.trainer import CHECKPOINT_DIR, build_trainer
from cvtransfer.io import read_json, write_json
from cvtransfer.losses import LOSSES, LossTerms, build_loss_terms
from cvtransfer.models.factory import BuiltModel
from cvtransfer.run import FEATURE_TIME_FILE, PROBE_FILE, Run, finish_run
from cvtransfer.scores.selection import SELECTION_SCORES
from cvtransfer.strategies import Strategy, get_strategy
from cvtransfer.strategies.linear import (
    fit_lbfgs_head,
    fit_sklearn_head,
    head_kind,
    probe_l2_values,
    solved_head,
)
from cvtransfer.tasks import Task, get_task

if TYPE_CHECKING:
    from cvtransfer.config import Config

log = logging.getLogger(__name__)

SOURCE_STAGE = "source_stage"
Splits = DatasetSplits | DomainSplits | SegmentationSplits | DetectionSplits


@dataclass
class Prepared:
    """Everything the Trainer needs, and what the outputs are made from."""

    config: Config
    task: Task
    splits: Splits
    built: BuiltModel
    strategy: Strategy
    loss_terms: LossTerms
    stream: Stream
    network: nn.Module  # what the module trains: the model, or its head on cached features

    @property
    def train_loader(self) -> Any:
        return self.stream.train

    @property
    def paired(self) -> bool:
        return self.stream.paired

    def module(self) -> TransferModule:
        """The LightningModule of this run: task loss, loss terms, the strategy's param groups."""
        config = self.config
        num_classes = len(self.splits.classes)
        weights = class_loss_weights(self.stream.train_labels, num_classes) if config.class_weights == "auto" else None
        head_lr = config.lr * config.head_lr_mult

        def param_groups() -> list[dict[str, Any]]:
            return self.strategy.param_groups() + self.loss_terms.param_groups(head_lr, config.weight_decay)

        return TransferModule(
            self.network, config, self.task, num_classes, param_groups, self.loss_terms, weights,
            channels_last=pick_device(config.accelerator).type == "cuda" and self.stream.train_features is None,
        )


def build_run_model(config: Config, splits: Splits, weights: str | None = None) -> BuiltModel:
    """The task's model: the backbone (or, for feature files, an MLP), adapt's bottleneck, the task's head."""
    task = get_task(config.task)
    config = task.settle_options(config, splits)
    if isinstance(splits, DomainSplits):
        width = feature_width(splits.train) if splits.features else None
        return task.build_model(config, splits.classes, weights or config.weights, config.bottleneck_dim, width)
    return task.build_model(config, splits.classes, weights or config.weights)


def prepare(config: Config, splits: Splits, weights: str | None = None) -> Prepared:
    """Seed, build the model, apply the strategy, build the loss terms and the stream (no training).

    ``config`` has passed :func:`check_options` (the commands and :func:`run` check it first).
    """
    pl.seed_everything(config.seed, workers=True, verbose=False)
    paired = isinstance(splits, DomainSplits)
    built = build_run_model(config, splits, weights)
    strategy = get_strategy(config.strategy)(built.model, config)
    strategy.setup()
    loss_terms = build_loss_terms(config, built.model, strategy.loss_terms(), paired=paired)
    loss_terms.attach(built.model)
    network: nn.Module = built.model
    task = get_task(config.task)
    if task.episodic:  # few-shot meta-training: a batch is an episode
        assert isinstance(splits, DatasetSplits), "episodes are drawn from class-labelled images"
        stream = episodic_stream(config, splits, built)
    elif isinstance(splits, DomainSplits):
        stream = paired_stream(config, splits, built.preprocessing)
    elif isinstance(splits, SegmentationSplits):  # a frozen encoder's maps are not cached: the decoder reads them
        stream = segmentation_stream(config, splits, built)
    elif isinstance(splits, DetectionSplits):
        stream = detection_stream(config, splits)
    elif strategy.uses_feature_cache:
        stream = feature_stream(config, splits, built)
        network = head_on_features(built)
    else:
        stream = labelled_stream(config, splits, built)
    return Prepared(config, task, splits, built, strategy, loss_terms, stream, network)


def train(config: Config, run_dir: Path, splits: Splits, callbacks: list[pl.Callback] | None = None,
          resume_from: Path | None = None, weights: str | None = None) -> Prepared:
    """Train according to ``config``, writing checkpoints and history into ``run_dir``; the best epoch is loaded."""
    prepared = prepare(config, splits, weights)
    if prepared.stream.train_features is not None and solved_head(config):
        _fit_solved_head(config, run_dir, prepared)
        return prepared
    if isinstance(splits, DomainSplits) and is_main_process() and resume_from is None:
        shift = {"spaces": shift_spaces(config, splits), **measure_before(prepared.built, splits, config)}
        write_json(run_dir / SHIFT_FILE, shift)
    if isinstance(splits, DomainSplits):
        # measure_before leaves the network in channels-last layout, in which adaptation has always trained;
        # a resumed run (which does not measure) must train in the same layout to repeat the same numbers
        prepared.built.model.to(memory_format=torch.channels_last)
    module = prepared.module()
    monitor: tuple[str | None, str] | None = prepared.task.monitor
    if prepared.paired:
        metric = None if config.select_by == "none" else f"val_{config.select_by}"
        monitor = (metric, "max" if metric is None else SELECTION_SCORES.get(config.select_by).mode)
    random_state = RandomState([])  # exact resume: the generators' state travels in the checkpoints
    trainer = build_trainer(config, run_dir, [random_state, *prepared.strategy.callbacks(), *(callbacks or [])],
                            extra_metrics=history_columns(prepared.task, prepared.loss_terms, prepared.paired,
                                                          prepared.task.loss_parts(config)),
                            monitor=monitor)
    val: Any = prepared.stream.val
    if isinstance(prepared.stream.train, DataLoader):
        prepared.stream.train = for_world_size(prepared.stream.train, trainer.world_size)
        val = val[0]
    # the generators of the loader Lightning will iterate: what a resumed run must restore
    random_state.generators = loader_generators(prepared.stream.train)
    trainer.fit(module, prepared.stream.train, val, ckpt_path=resume_from, weights_only=True)
    if trainer.is_global_zero:
        best = run_dir / CHECKPOINT_DIR / "best.ckpt"
        if best.is_file():
            prepared.network.load_state_dict(network_state(load_checkpoint(best)))
    return prepared


def run(config: Config, run_dir: Path, callbacks: list[pl.Callback] | None = None,
        resume_from: Path | None = None) -> Run:
    """Train ``config`` into ``run_dir`` (its stages first) and finish the run folder; return it."""
    weights = None
    if config.target is not None and LOSSES.get(config.method).source_stage:
        weights = str(_source_stage(config, run_dir).path)
    return _train_and_finish(config, run_dir, callbacks, resume_from, weights)


def _train_and_finish(config: Config, run_dir: Path, callbacks: list[pl.Callback] | None,
                      resume_from: Path | None, weights: str | None) -> Run:
    check_options(config)  # before anything is read or written
    paired = config.target is not None
    splits: Splits = load_domain_splits(config, run_dir) if paired else load_splits(config, run_dir)
    if isinstance(splits, DomainSplits) and not splits.target_labelled:
        log.warning("the target has no labelled images: target accuracy cannot be measured; pass --target-test")
    prepared = train(config, run_dir, splits, callbacks, resume_from, weights)
    if not is_main_process():
        return Run(run_dir)
    features = None
    if isinstance(splits, DomainSplits):
        _record_shift(prepared, run_dir, weights)
    else:
        _record_feature_time(run_dir, prepared)
        features = prepared.stream.val_features if not splits.test else None  # evaluated on val: reuse its cache
    prepared.task.complete_model(prepared.built, splits, config, pick_device(config.accelerator))
    run = finish_run(run_dir, config, splits.classes, prepared.built.model, prepared.built.preprocessing, features)
    if config.report:
        from cvtransfer.report import write_report_safely

        write_report_safely(run.path)  # a report problem is a warning: the run is complete
    return run


def _record_shift(prepared: Prepared, run_dir: Path, weights: str | None) -> None:
    """shift.json: the measures before training (written at the start) and after it."""
    config, splits, built = prepared.config, prepared.splits, prepared.built
    assert isinstance(splits, DomainSplits)
    shift = read_json(run_dir / SHIFT_FILE) if (run_dir / SHIFT_FILE).is_file() else {}
    if "before" not in shift:  # resumed before it was written: the same starting network, re-made
        pl.seed_everything(config.seed, workers=True, verbose=False)
        shift.update(measure_before(build_run_model(config, splits, weights), splits, config))
        shift["spaces"] = shift_spaces(config, splits)
    elif "spaces" not in shift:  # a shift.json of an older version: its "before" space is not known
        shift["spaces"] = {name: label for name, label in shift_spaces(config, splits).items()
                           if name in ("after", "after_bottleneck")}
    shift.update(measure_after(built.model, splits, built.preprocessing, config))
    write_json(run_dir / SHIFT_FILE, shift)
    log.info("domain shift (proxy A-distance) before %.3f, after %.3f", shift["before"]["proxy_a_distance"],
             shift["after"]["proxy_a_distance"])


def _source_stage(config: Config, run_dir: Path) -> Run:
    """The source-only stage (ADDA's first) in RUN_DIR/source_stage; reused when already finished."""
    stage_dir = run_dir / SOURCE_STAGE
    if (stage_dir / "model.safetensors").is_file():
        return Run(stage_dir)
    stage = config.replace(method="source-only", mcc=0.0, loss="", epochs=config.source_epochs, report=False,
                           out=str(stage_dir))
    splits = load_domain_splits(config, run_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        stage.save(stage_dir / "config.yaml")
        write_json(stage_dir / SPLITS_FILE, splits.to_dict())
    last = stage_dir / CHECKPOINT_DIR / "last.ckpt"
    log.info("%s: source stage (%d epochs) in %s", config.method, stage.epochs, stage_dir)
    return _train_and_finish(stage, stage_dir, None, last if last.is_file() else None, None)


def _record_feature_time(run_dir: Path, prepared: Prepared) -> None:
    """FEATURE_TIME_FILE in the run folder: the training time of a probe includes its feature extraction.

    Written once: a resumed run reads the features back from the cache, which is not the time they took.
    """
    file = run_dir / FEATURE_TIME_FILE
    stream = prepared.stream
    if stream.feature_seconds is not None and stream.train_features is not None and not file.exists():
        write_json(file, {"seconds": stream.feature_seconds, "dims": int(stream.train_features[0].shape[1])})


def _fit_solved_head(config: Config, run_dir: Path, prepared: Prepared) -> None:
    """Fit the head on the cached features by its solver (L-BFGS or scikit-learn) and record a one-row
    history; the L-BFGS penalty search goes to PROBE_FILE."""
    stream, model = prepared.stream, prepared.built.model
    assert stream.train_features is not None and stream.val_features is not None
    start = time.perf_counter()
    kind = head_kind(config)
    if kind == "lbfgs":
        weights = (class_loss_weights(stream.train_labels, model.num_classes) if config.class_weights == "auto"
                   else None)
        probe = fit_lbfgs_head(model, stream.train_features, stream.val_features,
                               prepared.task.criterion(config, weights), probe_l2_values(config), config.monitor,
                               pick_device(config.accelerator))
        write_json(run_dir / PROBE_FILE, {"solver": "lbfgs", "l2": probe.l2, "selected_by": config.monitor,
                                          "candidates": probe.candidates, "seconds": probe.seconds})
        log.info("lbfgs head: L2 %g chosen by %s among %d penalties in %.2fs", probe.l2, config.monitor,
                 len(probe.candidates), probe.seconds)
    else:
        fit_sklearn_head(model, *stream.train_features, kind=kind, seed=config.seed)
    row: dict[str, float] = {"epoch": 0}
    head = nn.Sequential(model.dropout, model.head).eval()
    for split, (features, labels) in (("train", stream.train_features), ("val", stream.val_features)):
        if not len(labels):
            continue
        with torch.no_grad():
            logits = head(features)
        row[f"{split}_loss"] = float(nn.functional.cross_entropy(logits, labels))
        row[f"{split}_accuracy"] = float((logits.argmax(1) == labels).float().mean())
    row["seconds"] = time.perf_counter() - start
    write_history(run_dir / "history.csv", [row])
