"""Check the cvtransfer metadata of a saved model before anything is built from it.

A run's ``model.safetensors`` carries its backbone name, class names, preprocessing and architecture
widths as JSON in the header. The file may come from anywhere, so every value is checked (type,
range) and the widths are compared with the tensors' own shapes: a crafted header can neither
allocate gigabytes nor divide by zero, and it fails with one line naming the file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TypeGuard

import torch

from cvtransfer.errors import WeightsError

MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 4096  # the bounds of --image-size
MAX_CLASSES = 100_000
MAX_NAME_LENGTH = 500


def parse_model_metadata(text: str | None, path: str | Path, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The checked metadata in ``text`` (the header's JSON; ``{}`` when absent) of the file ``path``."""
    if text is None:
        return {}
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as err:
        raise _bad(path, f"its metadata is not valid JSON ({err.msg})") from None
    if not isinstance(metadata, dict):
        raise _bad(path, "its metadata is not a JSON object")
    _check_backbone(metadata, path)
    _check_classes(metadata, path, tensors)
    _check_architecture(metadata, path, tensors)
    _check_preprocessing(metadata, path)
    return metadata


def _bad(path: str | Path, what: str) -> WeightsError:
    return WeightsError(f"{path}: {what}; the file is damaged or was not written by cvtransfer: "
                        "pass the model.safetensors of a finished run")


def _check_backbone(metadata: dict[str, Any], path: str | Path) -> None:
    name = metadata.get("backbone")
    if name is not None and not (isinstance(name, str) and 0 < len(name) <= MAX_NAME_LENGTH):
        raise _bad(path, "'backbone' is not a model name")


def _check_classes(metadata: dict[str, Any], path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    if "classes" not in metadata:
        return
    classes = metadata["classes"]
    if not (isinstance(classes, list) and 0 < len(classes) <= MAX_CLASSES
            and all(isinstance(name, str) and len(name) <= MAX_NAME_LENGTH for name in classes)):
        raise _bad(path, "'classes' is not a list of class names")
    if len(set(classes)) != len(classes):
        raise _bad(path, "'classes' names a class twice")
    head = tensors.get("head.weight")
    if head is not None and head.shape[0] != len(classes):
        raise _bad(path, f"it names {len(classes)} classes but its head has {head.shape[0]} outputs")


def _check_architecture(metadata: dict[str, Any], path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """The widths must be those of the tensors (they size the model that is rebuilt to load them)."""
    architecture = metadata.get("architecture", {})
    if not isinstance(architecture, dict):
        raise _bad(path, "'architecture' is not a JSON object")
    bottleneck = tensors.get("bottleneck.0.weight")
    widths = {"bottleneck_dim": 0 if bottleneck is None else bottleneck.shape[0]}
    first = tensors.get("backbone.0.weight")
    if "in_features" in architecture or "mlp_dim" in architecture:
        if first is None or first.ndim != 2:
            raise _bad(path, "it describes an MLP on features but holds no such layer")
        widths.update(mlp_dim=first.shape[0], in_features=first.shape[1])
    for name, value in architecture.items():
        if name in widths and (not _is_int(value) or int(value) != widths[name]):
            raise _bad(path, f"'architecture.{name}' is {value!r} but its tensors say {widths[name]}")
    if "detector" in architecture:
        _check_detector(architecture, path)


DETECTOR_KEYS = {"detector", "norm", "min_size", "max_size", "anchor_sizes", "options"}
DETECTORS = ("fasterrcnn", "retinanet", "fcos", "ssdlite")  # torchvision's detectors --task detection builds
# torchvision's whole COCO detectors of those families (its backbone built in), by torchvision's names
TORCHVISION_DETECTORS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
                         "fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2",
                         "fcos_resnet50_fpn", "ssdlite320_mobilenet_v3_large")
NORM_POLICIES = ("frozen", "batch", "group")  # what a detector's backbone BatchNorm becomes


def _check_detector(architecture: dict[str, Any], path: str | Path) -> None:
    """A detection model's settings (they rebuild it): known names, sizes in the bounds of --image-size."""
    if architecture.get("detector") not in DETECTORS + TORCHVISION_DETECTORS or \
            architecture.get("norm") not in NORM_POLICIES:
        raise _bad(path, "'architecture.detector' or 'architecture.norm' is not a known name")
    for name in ("min_size", "max_size"):
        size = architecture.get(name)
        if not _is_int(size) or not MIN_INPUT_SIZE <= size <= 2 * MAX_INPUT_SIZE:
            raise _bad(path, f"'architecture.{name}' {size!r} is not a size from {MIN_INPUT_SIZE} to {2 * MAX_INPUT_SIZE}")
    anchors = architecture.get("anchor_sizes")
    if anchors is not None and not (isinstance(anchors, list) and 0 < len(anchors) <= 8
                                    and all(_is_int(a) and 0 < a <= MAX_INPUT_SIZE for a in anchors)):
        raise _bad(path, "'architecture.anchor_sizes' is not a list of pixel sizes")
    if architecture.get("options") not in (None, {}) or set(architecture) - DETECTOR_KEYS - {"bottleneck_dim"}:
        raise _bad(path, "'architecture' holds settings a detection model does not take")


def detector_family(detector: str) -> str:
    """The :data:`DETECTORS` family of a detector name (fasterrcnn for fasterrcnn_resnet50_fpn)."""
    return next(family for family in DETECTORS if detector.startswith(family))


def _check_preprocessing(metadata: dict[str, Any], path: str | Path) -> None:
    if "preprocessing" not in metadata:
        return
    pre = metadata["preprocessing"]
    if not isinstance(pre, dict):
        raise _bad(path, "'preprocessing' is not a JSON object")
    size = pre.get("input_size")
    features = "in_features" in (metadata.get("architecture") or {})  # the size is the feature vector's length
    if not _is_int(size) or (not features and not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE):
        raise _bad(path, f"'preprocessing.input_size' {size!r} is not a size from {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}")
    for name in ("mean", "std"):
        values = pre.get(name)
        if not (isinstance(values, list) and len(values) in (1, 3) and all(_is_finite(v) for v in values)):
            raise _bad(path, f"'preprocessing.{name}' is not 1 or 3 numbers")
    if any(v <= 0 for v in pre["std"]):
        raise _bad(path, "'preprocessing.std' has a value <= 0")
    crop = pre.get("crop_pct", 1.0)
    if not (_is_finite(crop) and 0 < crop <= 1):
        raise _bad(path, f"'preprocessing.crop_pct' {crop!r} is not in (0, 1]")
    if not isinstance(pre.get("interpolation", "bilinear"), str):
        raise _bad(path, "'preprocessing.interpolation' is not a name")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**31 - 1


def _is_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require_run_metadata(metadata: dict[str, Any], path: str | Path) -> None:
    """A run's model file must name its classes and preprocessing (predict and evaluate need both)."""
    missing = [key for key in ("classes", "preprocessing") if key not in metadata]
    if missing:
        raise _bad(path, f"its metadata has no {' and no '.join(repr(key) for key in missing)}")
