"""Object detection: boxes and their classes, judged by COCO mAP (torchmetrics' MeanAveragePrecision).

``cvtransfer fit DATA --task detection --detector fasterrcnn|retinanet|fcos|ssdlite``: torchvision's
detectors on the backbone's feature maps (:mod:`cvtransfer.models.detection`), labels in COCO, Pascal
VOC or YOLO layout (:mod:`cvtransfer.data.box_formats`), every strategy on the backbone as for
classification (``linear``: the FPN and heads on a frozen backbone). The detector computes its own
losses (torchvision's contract), so the engine asks the task for them (:meth:`Detection.network_loss`);
the best epoch is the one of the highest validation mAP.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torchmetrics import Metric

from cvtransfer.evaluation.detection import MapScore
from cvtransfer.models.factory import BuiltModel
from cvtransfer.models.metadata import detector_family
from cvtransfer.options import DATA, MODEL, opt
from cvtransfer.tasks.base import TASKS, ReportSection, Task

if TYPE_CHECKING:
    from pathlib import Path

    from cvtransfer.config import Config
    from cvtransfer.run import Run


log = logging.getLogger(__name__)

# torchvision's names of each detector's losses (history.csv's train_<name> columns)
LOSS_PARTS = {"fasterrcnn": ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"),
              "retinanet": ("classification", "bbox_regression"),
              "fcos": ("classification", "bbox_regression", "bbox_ctrness"),
              "ssdlite": ("classification", "bbox_regression")}


@dataclass
class DetectionOptions:
    detector: str = opt(
        "fasterrcnn", "detection: fasterrcnn, retinanet, fcos, ssdlite on the backbone, or a torchvision COCO "
        "detector by name (fasterrcnn_resnet50_fpn, ...).", MODEL)
    norm: Literal["frozen", "batch", "group"] = opt(
        "frozen", "detection: the backbone's BatchNorm: frozen statistics (small batches), trainable, or "
        "replaced by GroupNorm.", MODEL)
    anchor_sizes: str = opt("", "detection: anchor sizes in pixels, one per level (e.g. 16,32,64,128,256), or "
                            "'auto' from the training boxes; default: the detector's own.", MODEL)
    missing_labels: Literal["error", "background"] = opt(
        "error", "detection: an image without a label file is an error, or a background image (no boxes).", DATA)


@contextlib.contextmanager
def loss_mode(network: nn.Module) -> Iterator[None]:
    """The detector in train mode (so it returns its losses) with every norm and dropout layer in eval mode,
    so that a validation batch changes no running statistic."""
    modes = {module: module.training for module in network.modules()}
    network.train()
    for module in network.modules():
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)) or \
                "DropPath" in type(module).__name__:
            module.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


@TASKS.register("detection")
class Detection(Task):
    """torchvision's detector losses (classification + box regression) on a detector over the backbone."""

    name = "detection"
    metric_name = "map"
    run_files = ("classes.json", "metrics.json", "pr_curve.png", "examples.png", "curves.png")
    report_sections = ("summary", "config", "data", "curves", "per-class-ap", "pr-curve", "examples", "diagnosis")
    options = DetectionOptions
    monitor = ("val_map", "max")
    train_metric = False  # mAP needs the detector in eval mode: measured on the validation split only

    def discover_splits(self, config: Config) -> Any:
        from cvtransfer.data.box_splits import discover_detection_splits

        assert config.data is not None
        return discover_detection_splits(config.data, config.val_split, config.test_split, config.seed,
                                         config.missing_labels, max_pixels=config.max_image_pixels)

    def read_splits(self, values: dict[str, Any]) -> Any:
        from cvtransfer.data.box_splits import DetectionSplits

        return DetectionSplits.from_dict(values)

    def describe_splits(self, splits: Any) -> str:
        boxes = (splits.counts(name)["boxes"] for name in ("train", "val", "test"))
        return (f"{len(splits.classes)} classes; {len(splits.train)} train, {len(splits.val)} val, {len(splits.test)} "
                "test images with {}, {}, {} boxes".format(*boxes))

    def settle_options(self, config: Config, splits: Any) -> Config:
        if config.anchor_sizes != "auto":
            return config
        suggested = ",".join(map(str, suggested_anchor_sizes(splits.train, config)))
        log.info("anchor sizes from the training boxes (--anchor-sizes auto): %s", suggested)
        return config.replace(anchor_sizes=suggested)

    def build_model(self, config: Config, classes: list[str], weights: str, bottleneck_dim: int = 0,
                    feature_width: int | None = None) -> BuiltModel:
        from cvtransfer.models.factory import build_detection_model

        return build_detection_model(config.backbone, weights, classes, config.detector, config.image_size or 512,
                                     anchor_sizes(config), config.norm, config.seed, config.allow_partial_weights)

    def loss_parts(self, config: Config) -> tuple[str, ...]:
        return LOSS_PARTS[detector_family(config.detector)]

    def network_loss(self, network: nn.Module, x: Any, y: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses: dict[str, torch.Tensor] = network(x, y)
        return torch.stack(list(losses.values())).sum(), losses

    def network_outputs(self, network: nn.Module, x: Any, y: Any) -> tuple[Any, torch.Tensor | None]:
        # the loss samples proposals and picks a resize at random: on a fork of the generators, so that
        # validation leaves the training's random numbers as they were
        devices = [x[0].device] if x and x[0].device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), loss_mode(network):
            losses = network(x, y)
        return network(x), torch.stack(list(losses.values())).sum()

    def criterion(self, config: Config, class_weights: torch.Tensor | None = None) -> nn.Module:
        return nn.Identity()  # not called: the detector computes its losses (network_loss)

    def metric(self, num_classes: int) -> Metric:
        return MapScore()

    def summary(self, metrics: dict[str, Any]) -> str:
        def show(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4f}"

        return (f"{metrics['split']} mAP {show(metrics['map'])}, mAP@.5 {show(metrics['map_50'])}, recall@100 "
                f"{show(metrics['mar_100'])} ({metrics['num_images']} images, {metrics['num_boxes']} boxes)")

    def evaluate_run(self, run: Run, data: str | Path | None, out: Path,
                     device: torch.device) -> tuple[dict[str, Any], Any]:
        from cvtransfer.evaluation.detection_run import evaluate_detection

        metrics = evaluate_detection(run, data, out, device)
        return metrics, None

    def predict_run(self, run: Run, files: list[str], out: Path, device: torch.device) -> list[dict[str, Any]]:
        from cvtransfer.evaluation.detection_run import predict_detection

        return predict_detection(run, files, out, device)

    def report_builders(self, run: Run, title: str, seconds: float | None) -> list[ReportSection]:
        from cvtransfer.evaluation.detection_report import detection_sections

        return detection_sections(run, title, seconds)

    def method_label(self, config: Config) -> str:
        return f"{config.strategy}, {config.detector}"


def anchor_sizes(config: Config) -> tuple[int, ...] | None:
    """--anchor-sizes as a tuple (None: the detector's own); 'auto' is resolved from the training boxes by the
    runner before the model is built."""
    text = config.anchor_sizes.strip()
    if not text or text == "auto":
        return None
    return tuple(int(part) for part in text.replace(" ", "").split(","))


def suggested_anchor_sizes(images: list[Any], config: Config) -> tuple[int, ...]:
    """Anchor sizes from the training boxes as the detector sees them (each image scaled as its transform
    scales it: shorter side ``--image-size``, longer side at most 5/3 of it), one per pyramid level."""
    from cvtransfer.data.boxes import BoxImage, BoxSet, suggest_anchor_sizes
    from cvtransfer.models.factory import max_detection_size

    size = config.image_size or 512
    scaled = []
    for image in images:
        scale = min(size / min(image.width, image.height), max_detection_size(size) / max(image.width, image.height))
        scaled.append(BoxImage(image.image, round(image.width * scale), round(image.height * scale),
                               image.boxes * scale, image.labels))
    return suggest_anchor_sizes(BoxSet([], scaled), levels=anchor_levels(config.detector))


def anchor_levels(detector: str) -> int:
    """How many anchor sizes ``detector`` takes: one per pyramid level (SSDlite: its six maps)."""
    return 6 if detector_family(detector) == "ssdlite" else 5
