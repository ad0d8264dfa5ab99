"""Load weights from a local file safely, reporting what matched, what was missing and what was dropped.

Safe means no arbitrary unpickling: safetensors files are read by safetensors, everything else by
``torch.load(weights_only=True)`` (through timm's loader, which also unwraps ``state_dict``,
``model`` and EMA entries and strips ``module.`` prefixes).
"""

from __future__ import annotations

import json
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
from cvtransfer.models.transfer_model import TransferModel

log = logging.getLogger(__name__)

METADATA_KEY = "cvtransfer"
MODEL_FILE = "model.safetensors"
OUR_PREFIXES = ("backbone.", "bottleneck.", "head.")
WRAPPER_PREFIXES = ("network.", "model.", "module.", "_orig_mod.")


@dataclass
class LoadReport:
    """What happened when weights were loaded into a model."""

    source: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # "key: reason"

    def summary(self) -> str:
        text = f"loaded {self.loaded} tensors from {self.source}"
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected), ("dropped", self.dropped)):
            if items:
                text += f"; {len(items)} {label} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "loaded": self.loaded, "missing": self.missing,
                "unexpected": self.unexpected, "dropped": self.dropped}


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
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
                metadata = handle.metadata() or {}
        except (SafetensorError, OSError) as err:
            raise WeightsError(f"{path} is not a readable safetensors file: {err}") from None
        return tensors, json.loads(metadata.get(METADATA_KEY, "{}"))
    try:
        state = load_state_dict(str(path), use_ema=True, weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(
            f"{path} holds Python objects beyond tensors and is refused (loading it could run code): "
            f"save its state_dict or convert it to safetensors ({str(err).splitlines()[0][:80]})"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise WeightsError(f"{path} is not a readable PyTorch weights file: {str(err).splitlines()[0]}") from None
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path} contains no tensors")
    return tensors, {}


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
    """Backbone tensors (keys relative to the backbone) and classifier tensors (weight, bias)."""
    state = _strip_wrappers(state)
    # all keys, not any: timm checkpoints of ViT, ConvNeXt, Swin name their classifier "head." too
    if all(key.startswith(OUR_PREFIXES) for key in state):
        body = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        head = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
        return body, head
    prefix = backbone.classifier_prefix + "."
    head = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    body = _apply_timm_filter({k: v for k, v in state.items() if not k.startswith(prefix)}, backbone)
    return body, head


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
    except Exception as err:  # noqa: BLE001 - a converter that does not fit leaves keys as they are
        log.debug("checkpoint_filter_fn of %s not applied: %s", backbone.name, err)
        return state


def load_into(model: TransferModel, backbone: Backbone, path: str | Path) -> tuple[LoadReport, dict[str, Any]]:
    """Load ``path`` into ``model``: tensors whose shape differs (a head of another size) are dropped."""
    state, metadata = read_state_dict(path)
    body, head = split_backbone_and_head(state, backbone)
    report = LoadReport(source=str(path))
    report.loaded += _load_filtered(model.backbone, body, report, prefix="")
    bottleneck = {k[len("bottleneck."):]: v for k, v in _strip_wrappers(state).items() if k.startswith("bottleneck.")}
    if bottleneck:  # a cvtransfer model with a bottleneck (an adaptation run, ADDA's source stage)
        report.loaded += _load_filtered(model.bottleneck, bottleneck, report, prefix="bottleneck.", count_missing=False)
    if head:
        report.loaded += _load_filtered(model.head, head, report, prefix="head.", count_missing=False)
    if report.loaded == 0:
        raise WeightsError(
            f"no tensor of {path} matches backbone '{backbone.name}' (first keys: {', '.join(list(state)[:3])}): "
            "is it a checkpoint of another architecture?"
        )
    return report, metadata


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
