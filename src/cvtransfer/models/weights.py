"""Load weights from a local file safely, reporting what matched, what was missing and what was dropped.

Safe means no arbitrary unpickling: safetensors files are read by safetensors, everything else by
``torch.load(weights_only=True)`` (through timm's loader, which also unwraps ``state_dict``,
``model`` and EMA entries and strips ``module.`` prefixes).
"""

from __future__ import annotations

import logging
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from timm.models import load_state_dict

from cvtransfer.errors import WeightsError
from cvtransfer.models.backbones import Backbone
from cvtransfer.models.metadata import parse_model_metadata
from cvtransfer.models.transfer_model import TransferModel

log = logging.getLogger(__name__)

METADATA_KEY = "cvtransfer"
MODEL_FILE = "model.safetensors"
OUR_PREFIXES = ("backbone.", "bottleneck.", "head.")
WRAPPER_PREFIXES = ("network.", "model.", "module.", "_orig_mod.")
BN_COUNTER = "num_batches_tracked"  # BatchNorm's step counter: present in every BN model, it proves no fit
PARTIAL_LIMIT = 0.1  # more than this share of backbone tensors missing or mis-shaped: another architecture


@dataclass
class LoadReport:
    """What happened when weights were loaded into a model."""

    source: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # "key: reason"
    head: str = ""  # what became of the file's classifier head, when the class names say something

    @property
    def new_head(self) -> bool:
        """The file's head was left out because its classes are not the data's."""
        return self.head.startswith("new head")

    def summary(self) -> str:
        text = f"loaded {self.loaded} tensors from {self.source}"
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected), ("dropped", self.dropped)):
            if items:
                text += f"; {len(items)} {label} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
        return text + (f"; {self.head}" if self.head else "")

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "loaded": self.loaded, "missing": self.missing,
                "unexpected": self.unexpected, "dropped": self.dropped, "head": self.head}


def resolve_weights_file(path: str | Path) -> Path:
    """The weights file for ``path``: the file itself, or a run folder's model.safetensors."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist: pass an existing file, imagenet or none")
    return path


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, cvtransfer metadata or {}) from a .safetensors, .pth/.pt/.bin or Lightning .ckpt file."""
    path = resolve_weights_file(path)
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
                metadata = handle.metadata() or {}
        except (SafetensorError, OSError) as err:
            raise WeightsError(f"{path} is not a readable safetensors file: {err}") from None
        return tensors, parse_model_metadata(metadata.get(METADATA_KEY), path, tensors)
    try:
        state = load_state_dict(str(path), use_ema=True, weights_only=True)
    except pickle.UnpicklingError:
        raise _refused(path) from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        if "weights_only" in str(err):
            raise _refused(path) from None
        raise WeightsError(f"{path} is not a readable PyTorch weights file: {str(err).splitlines()[0]}") from None
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path} contains no tensors")
    return tensors, {}


def _refused(path: Path) -> WeightsError:
    """The refusal of a pickle holding code, without torch's advice to load it unsafely."""
    return WeightsError(f"{path}: refused: it holds pickled code, which cvtransfer never runs; convert it to "
                        ".safetensors (or a plain state dict) on a machine you trust")


def _strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove prefixes added by wrappers (a LightningModule's attribute, DDP, torch.compile)."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if state and all(key.startswith(prefix) for key in state):
                state = {key[len(prefix):]: value for key, value in state.items()}
                changed = True
    return state


def split_backbone_and_head(
    state: dict[str, torch.Tensor], backbone: Backbone
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Backbone tensors (keys relative to the backbone) and classifier tensors (weight, bias).

    The architecture's converter runs on the backbone tensors (it resamples position embeddings to
    the model's input size); on a cvtransfer file only where it makes more tensors fit.
    """
    state = _strip_wrappers(state)
    # all keys, not any: timm checkpoints of ViT, ConvNeXt, Swin name their classifier "head." too
    if all(key.startswith(OUR_PREFIXES) for key in state):
        body = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        head = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
        converted = _convert(body, backbone)
        own = backbone.module.state_dict()
        return (converted if len(_fitting(own, converted)) > len(_fitting(own, body)) else body), head
    prefix = backbone.classifier_prefix + "."
    head = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    body = _convert({k: v for k, v in state.items() if not k.startswith(prefix)}, backbone)
    return body, head


def _fitting(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> list[str]:
    """Keys of ``own`` that ``state`` fills with a tensor of the same shape (BatchNorm counters aside)."""
    return [k for k, v in own.items()
            if not k.endswith(BN_COUNTER) and k in state and state[k].shape == v.shape]


def _convert(state: dict[str, torch.Tensor], backbone: Backbone) -> dict[str, torch.Tensor]:
    """timm's ``checkpoint_filter_fn`` of the architecture, or torchvision's ViT embedding interpolation."""
    if backbone.source == "torchvision":
        module = backbone.module
        if "encoder.pos_embedding" in state and hasattr(module, "image_size"):
            from torchvision.models.vision_transformer import interpolate_embeddings

            return interpolate_embeddings(module.image_size, module.patch_size, state)
        return state
    return _apply_timm_filter(state, backbone)


def _apply_timm_filter(state: dict[str, torch.Tensor], backbone: Backbone) -> dict[str, torch.Tensor]:
    """Run the architecture's own checkpoint converter (timm's ``checkpoint_filter_fn``), if any.

    It remaps original-repository keys and resamples position embeddings to the model's size.
    """
    if backbone.source != "timm":
        return state
    convert = getattr(sys.modules.get(type(backbone.module).__module__), "checkpoint_filter_fn", None)
    if convert is None:
        return state
    try:
        return convert(state, backbone.module)
    except Exception as err:  # a converter that does not fit leaves keys as they are
        log.debug("checkpoint_filter_fn of %s not applied: %s", backbone.name, err)
        return state


def load_into(
    model: TransferModel, backbone: Backbone, path: str | Path, class_names: list[str] | None = None,
    allow_partial: bool = False, read: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
) -> tuple[LoadReport, dict[str, Any]]:
    """Load ``path`` into ``model``: tensors whose shape differs (a head of another size) are dropped.

    ``class_names``: the data's classes; the file's head is reused only for the same names (rows put
    in the data's order), else a new head starts. More than PARTIAL_LIMIT of the backbone's tensors
    missing or mis-shaped is an error unless ``allow_partial``. ``read``: the file's (tensors, metadata).
    """
    state, metadata = read if read is not None else read_state_dict(path)
    body, head = split_backbone_and_head(state, backbone)
    _check_coverage(model.backbone.state_dict(), body, backbone.name, metadata, path, state, allow_partial)
    report = LoadReport(source=str(path))
    report.loaded += _load_filtered(model.backbone, body, report, prefix="")
    bottleneck = {k[len("bottleneck."):]: v for k, v in _strip_wrappers(state).items() if k.startswith("bottleneck.")}
    if bottleneck:  # a cvtransfer model with a bottleneck (an adaptation run, ADDA's source stage)
        report.loaded += _load_filtered(model.bottleneck, bottleneck, report, prefix="bottleneck.", count_missing=False)
    head = _matching_head(head, metadata.get("classes"), class_names, report, getattr(model, "class_layers", ()))
    if head:
        dropped = len(report.dropped)
        report.loaded += _load_filtered(model.head, head, report, prefix="head.", count_missing=False)
        if class_names is not None and metadata.get("classes") is None and len(report.dropped) == dropped:
            report.head = ("head reused without class names to check (the file has none): make sure its "
                           "classes are the data's, in the same order")
    return report, metadata


def _check_coverage(
    own: dict[str, torch.Tensor], body: dict[str, torch.Tensor], name: str, metadata: dict[str, Any],
    path: str | Path, state: dict[str, torch.Tensor], allow_partial: bool,
) -> None:
    """Refuse weights that fill none, or (unless ``allow_partial``) too few, of the backbone's tensors."""
    own = {k: v for k, v in own.items() if not k.endswith(BN_COUNTER)}
    if not own:
        return
    fitting = _fitting(own, body)
    if not fitting:
        raise WeightsError(
            f"no tensor of {path} matches backbone '{name}' (first keys: {', '.join(list(state)[:3])}): "
            "is it a checkpoint of another architecture?"
        )
    matched = set(fitting)
    bad = [k for k in own if k not in matched]
    if len(bad) <= PARTIAL_LIMIT * len(own):
        return
    saved = metadata.get("backbone")
    origin = f"holds weights of backbone '{saved}'" if saved and saved != name else "does not fit"
    text = (f"{path} {origin}, not of --backbone '{name}': {len(bad)} of {len(own)} backbone tensors "
            f"missing or of another shape ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")
    if not allow_partial:
        raise WeightsError(f"{text}; pass weights of '{name}', or --allow-partial-weights to go on with "
                           "those tensors left at their initialisation")
    log.warning("%s; going on (--allow-partial-weights)", text)


def _matching_head(
    head: dict[str, torch.Tensor], file_classes: list[str] | None, class_names: list[str] | None,
    report: LoadReport, class_layers: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """The file's head if its classes are the data's (rows reordered to the data's order), else {}, or, for a
    head whose ``class_layers`` alone score classes (a detector's), the rest of it."""
    if not head or file_classes is None or class_names is None:
        return head
    if list(file_classes) == list(class_names):
        return head
    if sorted(file_classes) == sorted(class_names) and len(set(class_names)) == len(class_names):
        order = [list(file_classes).index(name) for name in class_names]
        if all(value.shape[:1] == (len(order),) for value in head.values()):
            report.head = "head reused, its rows reordered to the data's class order"
            return {key: value[order] for key, value in head.items()}
    differ = f"the file's classes ({_preview(file_classes)}) are not the data's ({_preview(class_names)})"
    if class_layers:
        report.head = f"head reused but its class layers ({', '.join(p.rstrip('.') for p in class_layers)}): {differ}"
        return {key: value for key, value in head.items() if not key.startswith(class_layers)}
    report.head = f"new head: {differ}"
    return {}


def _preview(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f", ... ({len(names)})" if len(names) > 4 else "")


def _load_filtered(
    module: torch.nn.Module, state: dict[str, torch.Tensor], report: LoadReport, prefix: str, count_missing: bool = True
) -> int:
    own = module.state_dict()
    fitting = {}
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            report.dropped.append(f"{prefix}{key}: shape {tuple(value.shape)} != {tuple(own[key].shape)}")
        else:
            fitting[key] = value
    result = module.load_state_dict(fitting, strict=False)
    if count_missing:
        report.missing += [prefix + k for k in result.missing_keys]
    report.unexpected += [prefix + k for k in result.unexpected_keys]
    return len(fitting) - len(result.unexpected_keys)
