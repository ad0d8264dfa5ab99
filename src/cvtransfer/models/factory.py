"""Build the model a Config asks for: backbone, weights, head and preprocessing."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from cvtransfer.data.transforms import Preprocessing
from cvtransfer.errors import ConfigError
from cvtransfer.models.backbones import Backbone, create_backbone
from cvtransfer.models.clip import is_clip
from cvtransfer.models.feature_mlp import feature_backbone
from cvtransfer.models.metadata import TORCHVISION_DETECTORS
from cvtransfer.models.transfer_model import TransferModel
from cvtransfer.models.weights import LoadReport, load_into, read_state_dict, resolve_weights_file

log = logging.getLogger(__name__)


@dataclass
class BuiltModel:
    """A model ready to train, with the facts later steps need."""

    model: TransferModel
    backbone: Backbone
    preprocessing: Preprocessing
    weights_id: str  # identifies the starting weights (feature cache key)
    load_report: LoadReport | None


def build_model(
    backbone_name: str, weights: str, num_classes: int, image_size: int | None = None, drop_rate: float = 0.0,
    seed: int = 0, bottleneck_dim: int = 0, class_names: list[str] | None = None,
    allow_partial_weights: bool = False,
) -> BuiltModel:
    """Create ``backbone_name`` with ``weights`` (imagenet, none or a path) and a ``num_classes`` head.

    The model is built for ``image_size`` (else the weights file's size, else the default); a file's
    head is reused only for ``class_names`` (when given) equal to its own, in any order.
    """
    if is_clip(backbone_name) and not is_cvtransfer_weights(weights):
        return _clip_model(backbone_name, weights, num_classes, image_size, drop_rate, seed, bottleneck_dim)
    read, image_size = _read_weights(weights, image_size)
    backbone = create_backbone(backbone_name, pretrained=weights == "imagenet", image_size=image_size)
    return _assemble(backbone, weights, num_classes, image_size, drop_rate, seed, bottleneck_dim, class_names,
                     allow_partial_weights, read)


def is_cvtransfer_weights(weights: str) -> bool:
    """Whether ``weights`` is a run folder or a model file cvtransfer wrote (not a foreign checkpoint)."""
    if weights in ("imagenet", "none", "coco") or not Path(weights).exists():
        return False
    return Path(weights).is_dir() or "backbone" in read_state_dict(resolve_weights_file(weights))[1]


def _clip_model(name: str, weights: str, num_classes: int, image_size: int | None, drop_rate: float, seed: int,
                bottleneck_dim: int) -> BuiltModel:
    """An open_clip image tower with its own weights (none, a tag, an open_clip checkpoint) and a new head."""
    from cvtransfer.models.backbones import clip_backbone, create_clip_model

    clip = create_clip_model(name, weights, image_size)
    backbone = clip_backbone(clip)
    model = TransferModel(backbone.module, backbone.num_features, num_classes, backbone.layer_groups, drop_rate,
                          bottleneck_dim)
    source = f"file:{file_digest(Path(weights))}" if Path(weights).is_file() else clip.weights_source
    weights_id = f"none:{backbone.name}:seed{seed}" if weights == "none" else f"clip:{backbone.name}:{source}"
    return BuiltModel(model, backbone, backbone.preprocessing.with_size(image_size), weights_id, None)


def build_feature_model(
    in_features: int, weights: str, num_classes: int, mlp_dim: int = 512, drop_rate: float = 0.0, seed: int = 0,
    bottleneck_dim: int = 0, class_names: list[str] | None = None, allow_partial_weights: bool = False,
) -> BuiltModel:
    """An MLP over precomputed features (feature files) in place of a backbone; ``weights`` none or a path."""
    if weights == "imagenet":
        raise ConfigError("feature files train a small MLP from scratch: use --weights none (or the path of a "
                          "run trained on the same features)")
    built = _assemble(feature_backbone(in_features, mlp_dim), weights, num_classes, None, drop_rate, seed,
                      bottleneck_dim, class_names, allow_partial_weights)
    built.model.architecture.update(in_features=in_features, mlp_dim=mlp_dim)
    return built


def build_segmentation_model(
    backbone_name: str, weights: str, class_names: list[str], decoder: str, image_size: int | None = None,
    seed: int = 0, allow_partial_weights: bool = False,
) -> BuiltModel:
    """``backbone_name``'s feature maps with ``weights`` (imagenet, none, or a file: a classification run's
    backbone, or a segmentation run's whole network) under a ``decoder`` for ``class_names``."""
    from cvtransfer.models.segmentation import SegmentationModel

    read, image_size = _read_weights(weights, image_size)
    backbone = create_backbone(backbone_name, pretrained=weights == "imagenet", image_size=image_size)
    model = SegmentationModel(backbone, decoder, len(class_names))
    return _with_weights(model, backbone, weights, image_size, seed, class_names, allow_partial_weights, read)


def build_detection_model(
    backbone_name: str, weights: str, class_names: list[str], detector: str, image_size: int,
    anchor_sizes: tuple[int, ...] | None = None, norm: str = "frozen", seed: int = 0,
    allow_partial_weights: bool = False,
) -> BuiltModel:
    """torchvision's ``detector`` on ``backbone_name``'s feature maps with ``weights`` (imagenet, none, or a
    file: a classification run's backbone, or a detection run's whole network) for ``class_names``; images
    resized to a shorter side of ``image_size`` (longer side at most 5/3 of it, torchvision's 800/1333)."""
    from cvtransfer.models.detection import build_detector

    if detector in TORCHVISION_DETECTORS:
        return _torchvision_detection_model(detector, weights, class_names, image_size, norm, seed,
                                            allow_partial_weights)
    read, _ = _read_weights(weights, None)
    backbone = create_backbone(backbone_name, pretrained=weights == "imagenet", image_size=image_size)
    model = build_detector(backbone, detector, len(class_names), min_size=image_size,
                           max_size=max_detection_size(image_size), anchor_sizes=anchor_sizes, norm=norm)
    return _with_weights(model, backbone, weights, image_size, seed, class_names, allow_partial_weights, read)


def _torchvision_detection_model(detector: str, weights: str, class_names: list[str], image_size: int, norm: str,
                                 seed: int, allow_partial: bool) -> BuiltModel:
    """torchvision's whole COCO ``detector`` with ``weights``: coco (or imagenet, the default: the detector's own
    COCO weights from the hub cache), none, a torchvision state dict (.pth) or a detection run of it."""
    from cvtransfer.models.detection import torchvision_detector

    path = None if weights in ("coco", "imagenet", "none") else resolve_weights_file(weights)
    read = None if path is None else read_state_dict(path)
    plain = read[0] if read is not None and not read[1] else None  # torchvision's own file of this detector
    model = torchvision_detector(detector, len(class_names), path if plain is not None else None,
                                 pretrained=plain is not None or weights in ("coco", "imagenet"), state=plain,
                                 norm=norm, min_size=image_size, max_size=max_detection_size(image_size))
    backbone = Backbone(module=model.backbone, name=detector, source="torchvision", num_features=0,
                        # torchvision's detectors normalise with ImageNet's mean and std (GeneralizedRCNNTransform)
                        preprocessing=Preprocessing(image_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                                    "bilinear", 1.0),
                        classifier_prefix="", layer_groups=model.layer_groups,
                        weights_source="hub" if weights in ("coco", "imagenet") else "none")
    if plain is not None:
        assert path is not None
        return BuiltModel(model, backbone, backbone.preprocessing, f"file:{file_digest(path)}", None)
    coco = "coco" if weights == "imagenet" else weights  # the detector's own pretraining is COCO's
    return _with_weights(model, backbone, coco, image_size, seed, class_names, allow_partial, read)


def max_detection_size(image_size: int) -> int:
    """The longest side a detector resizes to for a shorter side of ``image_size`` (torchvision: 800 -> 1333)."""
    return round(image_size * 1333 / 800)


def rebuild_model(metadata: dict, num_classes: int, default_backbone: str) -> TransferModel:
    """An untrained model of the architecture a saved model's metadata describes (its tensors load into it).

    It is built at the saved input size (a ViT trained at 64 px has 64-px position embeddings).
    """
    architecture = metadata.get("architecture") or {}
    if architecture.get("detector") in TORCHVISION_DETECTORS:
        from cvtransfer.models.detection import torchvision_detector

        return torchvision_detector(str(architecture["detector"]), num_classes, pretrained=False,
                                    norm=str(architecture["norm"]), min_size=int(architecture["min_size"]),
                                    max_size=int(architecture["max_size"]))
    if "in_features" in architecture:
        backbone = feature_backbone(int(architecture["in_features"]), int(architecture["mlp_dim"]))
    else:
        backbone = create_backbone(metadata.get("backbone", default_backbone), pretrained=False,
                                   image_size=_saved_size(metadata))
    if "detector" in architecture:
        from cvtransfer.models.detection import build_detector

        return build_detector(backbone, str(architecture["detector"]), num_classes,
                              min_size=int(architecture["min_size"]), max_size=int(architecture["max_size"]),
                              anchor_sizes=architecture.get("anchor_sizes"), norm=str(architecture["norm"]),
                              **(architecture.get("options") or {}))
    if "decoder" in architecture:
        from cvtransfer.models.segmentation import SegmentationModel

        return SegmentationModel(backbone, str(architecture["decoder"]), num_classes)
    return TransferModel(backbone.module, backbone.num_features, num_classes, backbone.layer_groups,
                         bottleneck_dim=int(architecture.get("bottleneck_dim", 0)))


def _saved_size(metadata: dict) -> int | None:
    """The input size a saved model was trained at (its preprocessing metadata), if known."""
    size = (metadata.get("preprocessing") or {}).get("input_size")
    return int(size) if size else None


def _assemble(backbone: Backbone, weights: str, num_classes: int, image_size: int | None, drop_rate: float,
              seed: int, bottleneck_dim: int, class_names: list[str] | None = None,
              allow_partial: bool = False, read: tuple[dict, dict] | None = None) -> BuiltModel:
    model = TransferModel(backbone.module, backbone.num_features, num_classes, backbone.layer_groups, drop_rate,
                          bottleneck_dim)
    return _with_weights(model, backbone, weights, image_size, seed, class_names, allow_partial, read)


def _read_weights(weights: str, image_size: int | None) -> tuple[tuple[dict, dict] | None, int | None]:
    """(the weights file's tensors and metadata, or None for imagenet / none; the input size to build for:
    ``image_size``, else the file's)."""
    if weights in ("imagenet", "none"):
        return None, image_size
    read = read_state_dict(resolve_weights_file(weights))
    return read, image_size or _saved_size(read[1])


def _with_weights(model: TransferModel, backbone: Backbone, weights: str, image_size: int | None, seed: int,
                  class_names: list[str] | None, allow_partial: bool, read: tuple[dict, dict] | None) -> BuiltModel:
    """``model`` with ``weights`` loaded (a file's: through :func:`load_into`), its preprocessing and weights id."""
    preprocessing, report = backbone.preprocessing, None
    if weights in ("imagenet", "coco"):
        weights_id = f"{weights}:{backbone.name}:{backbone.weights_source}"
    elif weights == "none":
        weights_id = f"none:{backbone.name}:seed{seed}"
    else:
        path = resolve_weights_file(weights)
        report, metadata = load_into(model, backbone, path, class_names, allow_partial, read)
        log.log(logging.WARNING if report.new_head else logging.INFO, "weights: %s", report.summary())
        if "preprocessing" in metadata:
            preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
        weights_id = f"file:{file_digest(path)}"
    return BuiltModel(model, backbone, preprocessing.with_size(image_size), weights_id, report)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (identifies weights whatever their file name)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
