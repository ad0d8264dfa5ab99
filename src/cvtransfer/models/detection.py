"""Object detection: torchvision's detectors (Faster R-CNN, RetinaNet, FCOS, SSDlite) on any timm backbone
or torchvision CNN.

The trunk is the backbone cvtransfer builds for classification (any timm name or torchvision CNN, with any
weights source), read as segmentation reads it (:class:`FeatureMaps`, :mod:`cvtransfer.models.feature_maps`); torchvision
supplies the rest: FPN, anchors, heads, losses, box coding and the resize/normalise transform. The model is a
:class:`TransferModel` whose ``backbone`` is the trunk and whose ``head`` is the detector around it, so
freezing strategies and layer-wise LR see the trunk's layer groups as in classification.

Users number their classes 0..C-1; torchvision reserves label 0 for background, so the detector is built
for C + 1 classes, sees labels + 1 and :class:`DetectionModel` hands back the user's numbers.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torchvision
from timm.layers import BatchNormAct2d, GroupNormAct, freeze_batch_norm_2d
from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead, _extra_block, _normal_init
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from cvtransfer.errors import ConfigError, DataError, WeightsError, unknown_name
from cvtransfer.models import backbones
from cvtransfer.models.backbones import Backbone, create_backbone, torchvision_layer_groups
from cvtransfer.models.feature_maps import has_feature_maps, intermediates, torchvision_trunk
from cvtransfer.models.metadata import DETECTORS, NORM_POLICIES, TORCHVISION_DETECTORS, detector_family
from cvtransfer.models.segmentation import FeatureMaps
from cvtransfer.models.transfer_model import TransferModel
from cvtransfer.models.weights import read_state_dict

log = logging.getLogger(__name__)

LEVELS = {"fasterrcnn": 4, "retinanet": 3, "fcos": 3, "ssdlite": 2}  # trunk maps read: C2-C5, C3-C5, C4-C5
FPN_CHANNELS = 256
# torchvision's anchor sizes, one per level: the FPN's 5 (Faster R-CNN: 4 maps + max-pool; RetinaNet, FCOS:
# 3 maps + P6, P7); SSDlite's 6 come from its min/max ratios of the input size
DEFAULT_ANCHORS = {"fasterrcnn": (32, 64, 128, 256, 512), "retinanet": (32, 64, 128, 256, 512),
                   "fcos": (8, 16, 32, 64, 128)}
SSDLITE_MAPS = 6
SSDLITE_EXTRA_WIDTHS = (512, 256, 256, 128)  # ssdlite320_mobilenet_v3_large's extra blocks
SSDLITE_DEFAULTS = {"score_thresh": 0.001, "nms_thresh": 0.55, "detections_per_img": 300, "topk_candidates": 300}


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups, or the most groups below 32 that divide ``channels``."""
    return nn.GroupNorm(max(g for g in range(1, 33) if channels % g == 0), channels)


def apply_norm_policy(module: nn.Module, policy: str) -> nn.Module:
    """``module`` with its BatchNorm2d layers frozen (``frozen``: torchvision's FrozenBatchNorm2d, statistics
    and affine kept), trainable (``batch``) or replaced by GroupNorm (``group``: affine kept). timm's
    BatchNorm + activation layers keep their activation. Changes ``module`` in place."""
    if policy not in NORM_POLICIES:
        raise unknown_name("norm policy", policy, NORM_POLICIES)
    if policy == "frozen":
        return freeze_batch_norm_2d(module)
    return _to_group_norm(module) if policy == "group" else module


def _to_group_norm(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d):
        norm = group_norm(module.num_features)
        if isinstance(module, BatchNormAct2d):
            norm = GroupNormAct(module.num_features, norm.num_groups, eps=module.eps, apply_act=False)
            norm.act, norm.drop = module.act, module.drop
        if module.affine:
            with torch.no_grad():
                norm.weight.copy_(module.weight)
                norm.bias.copy_(module.bias)
        return norm
    for name, child in module.named_children():
        replaced = _to_group_norm(child)
        if replaced is not child:
            module.add_module(name, replaced)
    return module


class TrunkMaps:
    """The trunk's feature maps at ``indices``, named as torchvision's IntermediateLayerGetter names them.

    Not a module: the trunk stays registered once, as the :class:`DetectionModel`'s ``backbone``.
    """

    def __init__(self, trunk: Any, indices: list[int]) -> None:
        self.trunk, self.indices = trunk, indices

    def __call__(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = intermediates(self.trunk, x, self.indices)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


def trunk_maps(trunk: Any, name: str, levels: int) -> tuple[TrunkMaps, list[int]]:
    """The trunk's last ``levels`` maps (one per stride, the deepest at 32) and their channels; prunes the
    layers after them (the classifier's norm and convolutions)."""
    if not has_feature_maps(trunk):
        raise ConfigError(f"--backbone {name} cannot give feature maps for detection (timm's forward_intermediates): "
                          "pick a timm CNN or Swin such as resnet50, efficientnet_b0 or convnext_tiny, or a "
                          "torchvision CNN")
    maps = FeatureMaps(trunk, name)
    if not maps.pyramid or len(maps.indices) < levels:
        raise ConfigError(f"--backbone {name} gives feature maps at strides {maps.reductions}; this detector needs "
                          f"{levels} strides up to 32: pick a CNN or a Swin (resnet50, convnext_tiny, "
                          "swin_tiny_patch4_window7_224), not a plain ViT")
    return TrunkMaps(trunk, maps.indices[-levels:]), maps.channels[-levels:]


class TrunkWithFPN(nn.Module):
    """torchvision's BackboneWithFPN for a timm trunk: ``body`` (its maps), ``fpn``, ``out_channels``."""

    def __init__(self, body: TrunkMaps, in_channels: list[int], extra_blocks: ExtraFPNBlock) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels, FPN_CHANNELS, extra_blocks)
        self.out_channels = FPN_CHANNELS

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.fpn(self.body(x))


class TrunkWithExtras(nn.Module):
    """SSDlite's feature extractor for a timm trunk: its stride-16 and -32 maps, then torchvision's four extra
    blocks (strides 64 to 512) as ssdlite320_mobilenet_v3_large builds them.

    Not an FPN: SSDlite is the light detector (no 256-channel pyramid), and every backbone with a pyramid (timm
    CNNs, Swin) has maps at strides 16 and 32, which are what torchvision's SSDlite reads of MobileNetV3.
    """

    def __init__(self, body: TrunkMaps, in_channels: list[int], norm_layer: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.body = body
        widths = [in_channels[-1], *SSDLITE_EXTRA_WIDTHS]
        self.extra = nn.ModuleList(_extra_block(a, b, norm_layer) for a, b in itertools.pairwise(widths))
        _normal_init(self.extra)
        self.out_channels = [*in_channels, *SSDLITE_EXTRA_WIDTHS]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = list(self.body(x).values())
        for block in self.extra:
            maps.append(block(maps[-1]))
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


def anchor_generator(detector: str, sizes: Sequence[int] | None,
                     image_size: int) -> AnchorGenerator | DefaultBoxGenerator:
    """torchvision's anchors for ``detector``, or ``sizes`` (pixels, one per level) in their place.

    RetinaNet's levels get torchvision's three octave scales of each size; SSDlite's sizes are of its
    ``image_size`` input.
    """
    levels = SSDLITE_MAPS if detector == "ssdlite" else len(DEFAULT_ANCHORS[detector])
    if sizes is not None and len(sizes) != levels:
        raise ConfigError(f"anchor sizes {tuple(sizes)}: {detector} needs {levels}, one per feature level")
    if detector == "ssdlite":
        scales = None if sizes is None else [s / image_size for s in sizes] + [1.0]
        return DefaultBoxGenerator([[2, 3]] * SSDLITE_MAPS, min_ratio=0.2, max_ratio=0.95, scales=scales)
    sizes = sizes or DEFAULT_ANCHORS[detector]
    per_level: tuple[tuple[int, ...], ...]
    if detector == "retinanet":
        per_level = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in sizes)
    else:
        per_level = tuple((s,) for s in sizes)
    ratios = (1.0,) if detector == "fcos" else (0.5, 1.0, 2.0)
    return AnchorGenerator(per_level, (ratios,) * levels)


def to_model_targets(targets: Sequence[dict[str, Tensor]], num_classes: int) -> list[dict[str, Tensor]]:
    """``targets`` with labels past torchvision's background (class c becomes c + 1), checked: labels 0..C-1,
    boxes (N, 4) as x1, y1, x2, y2 in pixels with x2 > x1 and y2 > y1."""
    shifted = []
    for target in targets:
        labels, boxes = target["labels"].long(), target["boxes"]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise DataError(f"box labels must be class indices 0..{num_classes - 1} (no background class), "
                            f"got {int(labels.min())}..{int(labels.max())}")
        if boxes.ndim != 2 or boxes.shape[1] != 4 or bool((boxes[:, 2:] <= boxes[:, :2]).any()):
            raise DataError(f"boxes must be (N, 4) x1, y1, x2, y2 with x2 > x1 and y2 > y1 (an image without "
                            f"boxes: shape (0, 4)), got shape {tuple(boxes.shape)}: {boxes.tolist()[:3]}")
        shifted.append({**target, "labels": labels + 1})
    return shifted


def from_model_outputs(outputs: Sequence[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """torchvision's detections in the user's numbering: background ones (label 0, which sigmoid-scored
    RetinaNet and FCOS can give) dropped, the others' labels minus one."""
    results = []
    for output in outputs:
        keep = output["labels"] > 0
        results.append({"boxes": output["boxes"][keep], "scores": output["scores"][keep],
                        "labels": output["labels"][keep] - 1})
    return results


# per family, the head's layers with one output (set) per class (torchvision's names): Faster R-CNN's box
# regression is per class too; RetinaNet's, FCOS's and SSDlite's is class-agnostic
CLASS_LAYERS = {"fasterrcnn": ("roi_heads.box_predictor.cls_score.", "roi_heads.box_predictor.bbox_pred."),
                "retinanet": ("head.classification_head.cls_logits.",),
                "fcos": ("head.classification_head.cls_logits.",),
                "ssdlite": ("head.classification_head.",)}


class DetectionModel(TransferModel):
    """A torchvision detector as a :class:`TransferModel`: ``backbone`` is the trunk, ``head`` the rest (FPN
    or SSDlite extras, anchors, heads, transform), which reads the trunk without owning its parameters.

    ``forward(images, targets)``: in train mode torchvision's dict of losses; in eval mode one
    ``{"boxes", "scores", "labels"}`` per image, boxes in its pixels, labels 0..num_classes-1.
    """

    def __init__(self, trunk: nn.Module, layer_groups: list[list[str]], detector: nn.Module, num_classes: int,
                 architecture: dict[str, Any]) -> None:
        owned = {name for name, _ in trunk.named_parameters()}  # pruned layers and frozen norms own none
        groups = [[name for name in group if name in owned] for group in layer_groups]
        super().__init__(trunk, 1, num_classes, [group for group in groups if group])
        self.head = detector  # type: ignore[assignment]
        self._num_classes = num_classes
        self.architecture.update(architecture)  # saved with the model: what rebuilds it

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def features_dim(self) -> int:
        return 0

    @property
    def class_layers(self) -> tuple[str, ...]:
        """Prefixes of the head's tensors with outputs per class: the only ones a run on other classes starts
        anew (the FPN, the RPN and any class-agnostic box regression carry over)."""
        return CLASS_LAYERS[detector_family(str(self.architecture["detector"]))]

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        """The maps the detection heads read (FPN levels, or SSDlite's six) of a normalised batch."""
        return self.head.backbone(x)  # type: ignore[operator]

    def classify(self, embedding: Tensor) -> Tensor:
        raise NotImplementedError("a detection model classifies boxes: call it on a list of images")

    def forward_head(self, features: Tensor) -> Tensor:
        raise NotImplementedError("a detection model has no head on pooled features")

    def forward(self, images: Sequence[Tensor],  # type: ignore[override]
                targets: Sequence[dict[str, Tensor]] | None = None) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if not self.training:
            return from_model_outputs(self.head(list(images)))
        if targets is None:
            raise ConfigError("a detection model in train mode needs targets (boxes and labels per image)")
        return self.head(list(images), to_model_targets(targets, self.num_classes))


def build_detector(
    backbone: Backbone | str, detector: str, num_classes: int, *, min_size: int = 800, max_size: int = 1333,
    image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
    anchor_sizes: Sequence[int] | None = None, norm: str = "frozen", score_thresh: float | None = None,
    **options: Any,
) -> DetectionModel:
    """``detector`` for ``num_classes`` classes (background aside) on ``backbone``: a :class:`Backbone` from
    :func:`create_backbone` (any weights), or a name built without weights.

    Images are resized to ``min_size``..``max_size`` (SSDlite, and trunks of a fixed input size such as Swin:
    to a square of ``min_size``, resp. that size) and normalised by ``image_mean``/``image_std`` (default:
    the backbone's preprocessing). ``norm``: the trunk's BatchNorm policy (:func:`apply_norm_policy`);
    ``score_thresh``: the lowest score predicted (default: torchvision's for ``detector``); ``options`` go to
    torchvision's constructor (nms_thresh, detections_per_img, box_batch_size_per_image...).
    """
    if detector not in DETECTORS:
        raise unknown_name("detector", detector, DETECTORS)
    if num_classes < 1:
        raise ConfigError(f"a detector needs at least 1 class, not {num_classes}")
    if isinstance(backbone, str):
        backbone = create_backbone(backbone, image_size=min_size)
    backbone = torchvision_trunk(backbone)
    trunk = apply_norm_policy(backbone.module, norm)
    body, channels = trunk_maps(trunk, backbone.name, LEVELS[detector])
    settings = {"image_mean": list(image_mean or backbone.preprocessing.mean),
                "image_std": list(image_std or backbone.preprocessing.std), **options}
    if score_thresh is not None:
        settings["box_score_thresh" if detector == "fasterrcnn" else "score_thresh"] = score_thresh
    fixed = _fixed_input_size(trunk)
    if detector == "ssdlite":
        model = _ssdlite(body, channels, num_classes + 1, fixed or (min_size, min_size), anchor_sizes, norm, settings)
    else:
        if fixed is not None:
            settings.update(fixed_size=fixed, size_divisible=1)
        model = _fpn_detector(detector, body, channels, num_classes + 1, anchor_sizes,
                              {"min_size": min_size, "max_size": max_size, **settings})
    architecture = {"detector": detector, "norm": norm, "min_size": min_size, "max_size": max_size,
                    "anchor_sizes": list(anchor_sizes) if anchor_sizes else None, "options": options}
    return DetectionModel(trunk, backbone.layer_groups, model, num_classes, architecture)


def _fixed_input_size(trunk: nn.Module) -> tuple[int, int] | None:
    """The one input size a patch-embedding trunk (Swin) takes; None for trunks that take any."""
    embed = getattr(trunk, "patch_embed", None)
    return tuple(embed.img_size) if embed is not None and getattr(embed, "strict_img_size", False) else None


def _fpn_detector(detector: str, body: TrunkMaps, channels: list[int], num_classes: int,
                  anchor_sizes: Sequence[int] | None, settings: dict[str, Any]) -> nn.Module:
    """Faster R-CNN (4 maps + max-pool level), RetinaNet or FCOS (3 maps + P6, P7) on an FPN over ``body``."""
    extra = LastLevelMaxPool() if detector == "fasterrcnn" else LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS)
    features = TrunkWithFPN(body, channels, extra)
    anchors = anchor_generator(detector, anchor_sizes, settings["min_size"])
    if detector == "fasterrcnn":
        return FasterRCNN(features, num_classes, rpn_anchor_generator=anchors, **settings)
    kind = RetinaNet if detector == "retinanet" else FCOS
    return kind(features, num_classes, anchor_generator=anchors, **settings)


def _ssdlite(body: TrunkMaps, channels: list[int], num_classes: int, size: tuple[int, int],
             anchor_sizes: Sequence[int] | None, norm: str, settings: dict[str, Any]) -> nn.Module:
    """SSDlite at ``size`` on ``body``'s stride-16 and -32 maps and torchvision's extra blocks."""
    # its new layers: BatchNorm as torchvision's SSDlite for large batches ("batch"), else GroupNorm (FCOS's head's)
    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03) if norm == "batch" else group_norm
    features = TrunkWithExtras(body, channels, norm_layer)
    boxes = anchor_generator("ssdlite", anchor_sizes, size[0])
    head = SSDLiteHead(features.out_channels, boxes.num_anchors_per_location(), num_classes, norm_layer)
    return SSD(features, boxes, size, num_classes, head=head, **{**SSDLITE_DEFAULTS, **settings})


def torchvision_detector(name: str, num_classes: int, weights_path: str | Path | None = None, *,
                         pretrained: bool = True, state: dict[str, Tensor] | None = None, norm: str = "frozen",
                         min_size: int = 800, max_size: int = 1333, score_thresh: float | None = None,
                         **options: Any) -> DetectionModel:
    """torchvision's COCO-trained detector ``name`` for ``num_classes`` classes: every tensor from
    ``weights_path`` (default: torchvision's file in the hub cache; ``state``: its tensors, already read) but
    the class layers, which are new; ``pretrained=False``: no weights at all (a run's model rebuilt before its
    own tensors load).

    Images are resized to ``min_size``..``max_size`` (SSDlite: its fixed 320 px); ``options`` go to
    torchvision's constructor (nms_thresh, detections_per_img...).
    """
    if name not in TORCHVISION_DETECTORS:
        raise unknown_name("torchvision detector", name, TORCHVISION_DETECTORS)
    settings = dict(options)
    if detector_family(name) != "ssdlite":
        settings.update(min_size=min_size, max_size=max_size)
    if score_thresh is not None:
        settings["box_score_thresh" if name.startswith("fasterrcnn") else "score_thresh"] = score_thresh
    detector = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=num_classes + 1,
                                            **settings)
    if pretrained:
        path = Path(weights_path) if weights_path is not None else _coco_weights(name)
        if state is None:
            state = read_state_dict(path)[0]
        skip = CLASS_LAYERS[detector_family(name)]  # COCO's class layers never load, even for 90 classes of one's own
        _load_matching(detector, {k: v for k, v in state.items() if not k.startswith(skip)}, f"{path} ({name})",
                       new_layers=skip)
    owner = detector.backbone  # BackboneWithFPN's body, or SSDlite's features: the pretrained trunk
    attribute = "body" if hasattr(owner, "body") else "features"
    trunk = apply_norm_policy(getattr(owner, attribute), norm)
    delattr(owner, attribute)
    object.__setattr__(owner, attribute, trunk)  # still called there, but registered once: as the backbone
    architecture = {"detector": name, "norm": norm, "min_size": min_size, "max_size": max_size,
                    "anchor_sizes": None, "options": options}
    return DetectionModel(trunk, torchvision_layer_groups(trunk), detector, num_classes, architecture)


def _coco_weights(name: str) -> Path:
    """torchvision's COCO weights file for ``name`` in the hub cache, downloaded there if reachable."""
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    try:
        backbones._require_url_weights(url, name)
    except WeightsError:
        raise WeightsError(f"cannot download torchvision's COCO weights for {name} (offline?) and they are not "
                           f"cached: download {url} on a connected machine and pass its path as --weights") from None
    if not cached.is_file():
        torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True)
    return cached


def _load_matching(detector: nn.Module, state: dict[str, Tensor], source: str, new_layers: tuple[str, ...] = ()
                   ) -> None:
    """Load every tensor of ``state`` whose shape fits; the ``new_layers`` (prefixes) start anew; anything else
    missing or left over is a WeightsError."""
    own = detector.state_dict()
    new = sorted(k for k, v in state.items() if k in own and v.shape != own[k].shape)
    new += sorted(k for k in own if k.startswith(new_layers)) if new_layers else []
    result = detector.load_state_dict({k: v for k, v in state.items() if k not in new}, strict=False)
    missing = [k for k in result.missing_keys if k not in new and not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        differ = missing + list(result.unexpected_keys)
        raise WeightsError(f"{source}: not this detector's weights ({len(missing)} tensors missing, "
                           f"{len(result.unexpected_keys)} unknown, e.g. {differ[0]})")
    log.info("%s: %d tensors loaded, new: %s", source, len([k for k in state if k not in new]), ", ".join(new) or "none")
