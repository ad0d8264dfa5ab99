"""A run folder: the unit a user keeps. Everything to evaluate, predict or resume is inside.

    RUN_DIR/config.yaml  splits.json  classes.json  history.csv  checkpoints/{last,best}.ckpt
            model.safetensors  metrics.json  curves.png  confusion.png  [skipped.txt]
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from cvtransfer.config import Config
from cvtransfer.data.domains import domain_dataset
from cvtransfer.data.features import prepare_for_inference
from cvtransfer.data.folders import DatasetSplits, discover
from cvtransfer.data.images import is_image_file, list_files, split_usable
from cvtransfer.data.loaders import default_workers, make_loader
from cvtransfer.data.transforms import Preprocessing, eval_transform
from cvtransfer.engine.checkpoints import save_model
from cvtransfer.engine.history import read_history
from cvtransfer.engine.progress import announce_run_folder
from cvtransfer.engine.splits import TaskSplits, read_splits
from cvtransfer.errors import CvTransferError, DataError, WeightsError
from cvtransfer.evaluation.diagnosis import Diagnosis, diagnose
from cvtransfer.evaluation.plots import plot_confusion, plot_curves
from cvtransfer.io import atomic_write_text, beside, read_json, write_json
from cvtransfer.models.factory import rebuild_model
from cvtransfer.models.metadata import TORCHVISION_DETECTORS, require_run_metadata
from cvtransfer.models.transfer_model import TransferModel
from cvtransfer.models.weights import METADATA_KEY, MODEL_FILE, read_state_dict
from cvtransfer.tasks import Task, get_task

log = logging.getLogger(__name__)

FEATURE_TIME_FILE = "feature_extraction.json"  # seconds spent extracting (or reading cached) features
PROBE_FILE = "probe.json"  # the lbfgs head's penalty search: each L2 tried, its val loss and accuracy

Sample = tuple[str, int]


ZEROSHOT_FILE = "zeroshot.json"  # a zero-shot run's prompts (cvtransfer zeroshot)


def export_model(run_dir: Path, config: Config, classes: list[str], model: TransferModel,
                 preprocessing: Preprocessing) -> None:
    """Write model.safetensors (with backbone, classes and preprocessing as metadata) and classes.json."""
    whole_detector = model.architecture.get("detector") in TORCHVISION_DETECTORS  # its backbone built in
    metadata = {"backbone": model.architecture["detector"] if whole_detector else config.backbone, "classes": classes, "preprocessing": preprocessing.to_dict(),
                "strategy": config.strategy, "architecture": model.architecture}
    save_model(model, run_dir / MODEL_FILE, metadata)
    write_json(run_dir / "classes.json", classes)


@torch.inference_mode()
def predict_probs(model: torch.nn.Module, samples: Sequence[Sample], preprocessing: Preprocessing,
                  batch_size: int = 64, device: torch.device | str = "cpu", num_workers: int = 0,
                  max_pixels: int = 89_478_485) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and labels of ``samples``."""
    loader = make_loader(domain_dataset(list(samples), eval_transform(preprocessing), max_pixels), batch_size,
                         train=False, num_workers=num_workers)
    model = prepare_for_inference(model, device)
    probs, labels = [], []
    for images, targets in loader:
        images = images.to(device)
        if images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        probs.append(model(images).float().softmax(dim=1).cpu())
        labels.append(targets)
    if not probs:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(probs), torch.cat(labels)


class Run:
    """Handle on a finished (or interrupted) run folder."""

    def __init__(self, path: str | Path, max_image_pixels: int | None = None) -> None:
        """``max_image_pixels``: images above it are refused when evaluating or predicting (default: the run's)."""
        self.path = Path(path)
        if not (self.path / "config.yaml").is_file():
            raise CvTransferError(f"{self.path} is not a cvtransfer run folder (no config.yaml)")
        self.config = Config.load(self.path / "config.yaml")
        self.max_image_pixels = max_image_pixels or self.config.max_image_pixels

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def task(self) -> Task:
        """What the run predicts and how it is judged (``--task``)."""
        return get_task(self.config.task)

    @property
    def classes(self) -> list[str]:
        classes: list[str] = read_json(self.path / "classes.json")
        return classes

    @property
    def metrics(self) -> dict[str, Any]:
        path = self.path / "metrics.json"
        return read_json(path) if path.is_file() else {}

    @property
    def history(self) -> list[dict[str, float]]:
        return read_history(self.path / "history.csv")

    def splits(self) -> TaskSplits:
        return read_splits(self.config, self.path / "splits.json")

    def image_splits(self) -> DatasetSplits:
        """:meth:`splits` of a run whose samples are (image, class) pairs (classification, few-shot)."""
        splits = self.splits()
        assert isinstance(splits, DatasetSplits), f"a {self.config.task} run has no class-labelled image splits"
        return splits

    @cached_property
    def _loaded(self) -> tuple[TransferModel, Preprocessing]:
        path = self.path / MODEL_FILE
        if not path.is_file():
            raise CvTransferError(f"{path} is missing: the run has not finished (resume it with --resume)")
        state, metadata = read_state_dict(path)
        require_run_metadata(metadata, path)
        model = rebuild_model(metadata, len(metadata["classes"]), self.config.backbone)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise WeightsError(f"{path}: its tensors do not fit the model its metadata describes "
                               f"({str(err).splitlines()[-1].strip()}): pass the model.safetensors of a finished run"
                               ) from None
        return model.eval(), Preprocessing.from_dict(metadata["preprocessing"])

    @property
    def model(self) -> TransferModel:
        """The trained model (best checkpoint), in eval mode."""
        return self._loaded[0]

    @property
    def preprocessing(self) -> Preprocessing:
        return self._loaded[1]

    def _probs(self, samples: Sequence[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        from cvtransfer.engine.devices import pick_device

        return predict_probs(self.model, samples, self.preprocessing, self.config.batch_size,
                             pick_device(self.config.accelerator), default_workers(self.config.num_workers),
                             self.max_image_pixels)

    def evaluate(self, data: str | Path | None = None, out: str | Path | None = None,
                 features: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, Any]:
        """Metrics on ``data`` (its test split, else val, else all of it) or on the run's test/val split.

        ``features``: the backbone features of exactly those samples, when already computed.
        """
        out = Path(out) if out else self.path / ("metrics.json" if data is None else "metrics_external.json")
        from cvtransfer.engine.devices import pick_device

        dense = self.task.evaluate_run(self, data, out, pick_device(self.config.accelerator))
        if dense is not None:
            metrics, confusion = dense
            metrics["data"] = str(data or self.config.data)
            return self._write_metrics(metrics, out, confusion, normalise=True)
        name, samples = self._evaluation_samples(data)
        if not samples:
            raise DataError(f"no images to evaluate in the {name} split")
        if features is not None:
            with torch.inference_mode():
                probs, targets = self.model.forward_head(features[0]).softmax(dim=1), features[1]
        else:
            probs, targets = self._probs(samples)
        metrics = self.task.evaluate(probs, targets, self.classes)
        metrics.update(split=name, data=str(data or self.config.data))
        return self._write_metrics(metrics, out, metrics["confusion_matrix"], normalise=False)

    def _write_metrics(self, metrics: dict[str, Any], out: Path, confusion: list[list[int]] | None,
                       normalise: bool) -> dict[str, Any]:
        """``metrics`` with the fit diagnosis added, written to ``out``, its confusion matrix (if any) beside it."""
        history = self.history
        if history:
            result = run_diagnosis(self.config, history)
            metrics["diagnosis"] = {"verdict": result.verdict, "message": result.message, "signals": result.signals}
        write_json(out, metrics)
        if confusion is not None:
            plot_confusion(confusion, self.classes, beside(out, "confusion"),
                           normalise=normalise)
        return metrics

    def _evaluation_samples(self, data: str | Path | None) -> tuple[str, list[Sample]]:
        if data is None:
            splits = self.splits()
            assert isinstance(splits, DatasetSplits)
            return ("test", splits.test) if splits.test else ("val", splits.val)
        found = discover(data, val_split=0.0, require_val=False, max_pixels=self.max_image_pixels)
        unknown = sorted(set(found.classes) - set(self.classes))
        if unknown:
            raise DataError(f"{data} has class(es) the model was not trained on: {', '.join(unknown)}")
        remap = {i: self.classes.index(name) for i, name in enumerate(found.classes)}
        name = "test" if found.test else "val" if found.val else "train"
        return name, [(p, remap[y]) for p, y in found.split(name)]

    def predict(self, paths: Sequence[str | Path], top_k: int = 1, out: str | Path | None = None) -> list[dict[str, Any]]:
        """Top-k labels and probabilities for images and folders of images (unreadable ones skipped); a
        segmentation run writes each image's mask and overlay beside ``out`` (predictions.csv -> predictions/)."""
        usable, skipped = split_usable([str(f) for f in expand_images(paths)], self.max_image_pixels)
        for file, reason in skipped:
            log.warning("skipped %s: %s", file, reason)
        if not usable:
            raise DataError(f"no readable images among {', '.join(str(p) for p in paths)}")
        from cvtransfer.engine.devices import pick_device

        rows = self.task.predict_run(self, usable, Path(out or "predictions.csv"), pick_device(self.config.accelerator))
        if rows is not None:
            return rows
        probs, _ = self._probs([(p, 0) for p in usable])
        return self.task.prediction_rows(usable, probs, self.classes, top_k)


def write_predictions(rows: list[dict[str, Any]], path: str | Path) -> None:
    """predictions.csv: path, label, probability[, top_k]."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def expand_images(paths: Sequence[str | Path]) -> list[Path]:
    """The image files of ``paths`` (files, and the images inside folders); a missing path is a DataError."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += [f for f in list_files(path) if is_image_file(f)]
        elif path.exists():
            files.append(path)
        else:
            raise DataError(f"{path} does not exist")
    return files


def is_adaptation(run: Run) -> bool:
    """True for a run made by ``adapt`` (its config names a target domain)."""
    return run.config.target is not None


def model_label(run: Run) -> str:
    """What the run trained: the backbone, or "MLP on features (N dims)" for a run on feature files."""
    metadata = _model_metadata(run)
    architecture = metadata.get("architecture") or {}
    if "in_features" in architecture:
        return f"MLP on features ({int(architecture['in_features'])} dims)"
    if feature_input(run.config):
        return "MLP on features"
    return str(metadata.get("backbone") or run.config.backbone)  # the model file's: a whole COCO detector's name


def method_label(run: Run) -> str:
    """How it was trained: the strategy (with the head of a linear probe), and an adaptation run's method."""
    from cvtransfer.strategies.linear import head_kind

    config = run.config
    own = run.task.method_label(config)
    if own is not None:
        return own
    if (run.path / ZEROSHOT_FILE).is_file():
        return f"zero-shot ({len(read_json(run.path / ZEROSHOT_FILE)['templates'])} prompt templates)"
    strategy = f"{config.strategy} ({head_kind(config)} head)" if config.strategy == "linear" else config.strategy
    if not is_adaptation(run):
        return strategy
    method = config.method
    if config.mcc > 0 and method != "mcc":
        method += f" + mcc {config.mcc:g}"
    return f"{method} ({strategy})"


def run_title(run: Run) -> str:
    """"model / method", as the report and its figures name the run."""
    return f"{model_label(run)} / {method_label(run)}"


def training_seconds(run: Run) -> tuple[float | None, float]:
    """(total training time: epoch times plus feature extraction, None without a history; extraction part)."""
    history = run.history
    file = run.path / FEATURE_TIME_FILE
    extraction = float(read_json(file).get("seconds", 0.0)) if file.is_file() else 0.0
    if not history:
        return None, extraction
    epochs = sum(row["seconds"] for row in history if not math.isnan(row.get("seconds", math.nan)))
    return epochs + extraction, extraction


def _model_metadata(run: Run) -> dict[str, Any]:
    """The cvtransfer metadata of model.safetensors (read from its header only), {} when unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(run.path / MODEL_FILE), framework="pt") as handle:
            metadata = json.loads((handle.metadata() or {}).get(METADATA_KEY, "{}"))
    except Exception:
        return {}
    return metadata if isinstance(metadata, dict) else {}


def feature_input(config: Config) -> bool:
    """Whether a run's data (source or target) is a feature file rather than images."""
    from cvtransfer.data.domains import FEATURE_SUFFIXES

    paths = [p for p in (config.data, config.target) if p is not None]
    return any(Path(p).suffix.lower() in FEATURE_SUFFIXES for p in paths)


def run_diagnosis(config: Config, history: list[dict[str, float]]) -> Diagnosis:
    """The fit diagnosis of a run's history, knowing whether early stopping ended it and whether epochs apply."""
    from cvtransfer.strategies.linear import solved_head

    solver_head = solved_head(config)
    stopped_early = config.early_stop > 0 and not solver_head and len(history) < config.epochs
    return diagnose(history, stopped_early=stopped_early, epochs_apply=not solver_head,
                    metric=get_task(config.task).metric_name)


def selection_curve(config: Config) -> tuple[str, str] | None:
    """(history column, "min" or "max") of the score that chose an adaptation run's epoch; None otherwise."""
    if config.target is None or config.select_by == "none":
        return None
    from cvtransfer.scores.selection import SELECTION_SCORES

    return f"val_{config.select_by}", SELECTION_SCORES.get(config.select_by).mode


def finish_run(run_dir: Path, config: Config, classes: list[str], model: TransferModel,
               preprocessing: Preprocessing, features: tuple[torch.Tensor, torch.Tensor] | None = None) -> Run:
    """Export the model, then write metrics, curves, confusion matrix and the fit diagnosis.

    ``features``: cached backbone features of the evaluation split, if any (linear probes).
    """
    export_model(run_dir, config, classes, model, preprocessing)
    run = Run(run_dir)
    history = run.history
    if history:
        plot_curves(history, run_dir / "curves.png", run_title(run), selection=selection_curve(config),
                    metric_name=run.task.metric_name)
    metrics = run.evaluate(features=features)
    log.info("%s", run.task.summary(metrics))
    if "diagnosis" in metrics:
        log.info("diagnosis: %s", metrics["diagnosis"]["message"])
    announce_run_folder(run_dir)
    return run
