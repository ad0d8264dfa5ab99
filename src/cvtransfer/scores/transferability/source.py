"""The source model's classifier over its source classes, which LEEP and NCE read, when one exists.

- a cvtransfer run folder or its model.safetensors: the run's head (the classes it was trained on);
- a timm / torchvision checkpoint file: its classifier tensors (``split_backbone_and_head``);
- ``imagenet``: the 1000-class head of the weights' source (a weights package's file, else the hub's model);
- ``none``, or a file without a classifier: none, and LEEP/NCE are reported as not available.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import timm
import torch
import torchvision
from torch import nn

from cvtransfer.models.backbones import Backbone, resolve_name
from cvtransfer.models.weights import read_state_dict, split_backbone_and_head


@dataclass
class SourceClassifier:
    """A linear classifier on the backbone's pooled features: logits = features @ weight.T + bias."""

    weight: torch.Tensor  # (source classes, features)
    bias: torch.Tensor  # (source classes,)
    origin: str

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def probabilities(self, features: torch.Tensor) -> np.ndarray:
        """Softmax over the source classes for each row of ``features``, as float64."""
        logits = features.double() @ self.weight.double().T + self.bias.double()
        return logits.softmax(dim=1).numpy()


def source_classifier(backbone: Backbone, weights: str) -> tuple[SourceClassifier | None, str]:
    """(the classifier of ``weights`` for ``backbone``, or None; a note saying where it came from or why not)."""
    if weights == "none":
        return None, "random initialisation has no source classes"
    if weights == "imagenet" and backbone.pretrained_head is not None:
        head = backbone.pretrained_head
        bias = head.get("bias", torch.zeros(head["weight"].shape[0]))
        return _checked(SourceClassifier(head["weight"], bias, f"the ImageNet head of {backbone.weights_source}"),
                        backbone)
    if weights == "imagenet":
        try:
            module = _imagenet_classifier(backbone)
        except Exception as err:  # the hub answered for the backbone but not now: LEEP/NCE go without
            return None, f"the hub model's ImageNet head could not be loaded ({type(err).__name__})"
        return _from_module(module, backbone, "the hub model's ImageNet head")
    state, _ = read_state_dict(weights)
    _, head = split_backbone_and_head(state, backbone)
    if "weight" not in head:
        return None, f"{weights} holds no classifier"
    bias = head.get("bias", torch.zeros(head["weight"].shape[0]))
    return _checked(SourceClassifier(head["weight"], bias, f"the classifier in {weights}"), backbone)


def _imagenet_classifier(backbone: Backbone) -> nn.Module | None:
    """The pretrained hub model's classifier (the backbone itself was built without it)."""
    source, arch = resolve_name(backbone.name)
    if source == "timm":
        hub_model: Any = timm.create_model(arch, pretrained=True)  # every timm model has get_classifier()
        return hub_model.get_classifier()
    model = torchvision.models.get_model(arch, weights=torchvision.models.get_model_weights(arch).DEFAULT)
    return last_linear(model)


def last_linear(model: nn.Module) -> nn.Module | None:
    """The last ``nn.Linear`` of ``model`` (torchvision's classifier), if any."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _from_module(module: nn.Module | None, backbone: Backbone, origin: str) -> tuple[SourceClassifier | None, str]:
    if not isinstance(module, nn.Linear):
        return None, f"{origin} is not a linear layer on the pooled features"
    bias = module.bias if module.bias is not None else torch.zeros(module.out_features)
    return _checked(SourceClassifier(module.weight.detach(), bias.detach(), origin), backbone)


def _checked(classifier: SourceClassifier, backbone: Backbone) -> tuple[SourceClassifier | None, str]:
    weight = classifier.weight
    if weight.ndim != 2 or weight.shape[1] != backbone.num_features or classifier.bias.shape != (weight.shape[0],):
        return None, (f"{classifier.origin} has shape {tuple(weight.shape)}, not a classifier on "
                      f"{backbone.name}'s {backbone.num_features} pooled features")
    return classifier, f"{classifier.num_classes} source classes from {classifier.origin}"
