"""A backbone plus a linear head, aware of its layer groups and of which of them are frozen.

Frozen BatchNorm is the field's classic trap: ``requires_grad=False`` does not stop running
statistics from updating, and ``model.train()`` (called by every trainer each epoch) undoes a
one-time ``.eval()``. Here the frozen state is part of the model, and ``train()`` re-applies it:
normalisation layers of frozen groups stay in eval mode whatever calls ``train()``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase


def make_bottleneck(num_features: int, width: int) -> nn.Module:
    """Linear + BatchNorm1d + ReLU to ``width`` features (the domain-adaptation bottleneck); Identity if 0."""
    if width <= 0:
        return nn.Identity()
    return nn.Sequential(nn.Linear(num_features, width), nn.BatchNorm1d(width), nn.ReLU())


class TransferModel(nn.Module):
    """``head(dropout(bottleneck(backbone(x))))`` with the backbone's layer groups (stem first).

    The bottleneck is Identity unless ``bottleneck_dim`` > 0 (domain adaptation aligns its output).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        num_classes: int,
        layer_groups: list[list[str]],
        drop_rate: float = 0.0,
        bottleneck_dim: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.bottleneck = make_bottleneck(num_features, bottleneck_dim)
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(bottleneck_dim or num_features, num_classes)
        self.layer_groups = layer_groups
        self.architecture: dict[str, Any] = {"bottleneck_dim": bottleneck_dim}  # saved with the model
        self.frozen_groups: frozenset[int] = frozenset()
        self._norm_layers = self._norm_layers_by_group()

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def num_groups(self) -> int:
        return len(self.layer_groups)

    @property
    def features_dim(self) -> int:
        """Width of :meth:`embed`'s output (the bottleneck's, else the backbone's)."""
        return self.head.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features, shape (batch, num_features)."""
        return self.backbone(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The features the head reads: bottleneck(backbone(x)), shape (batch, features_dim)."""
        return self.bottleneck(self.forward_features(x))

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits from :meth:`embed`'s output."""
        return self.head(self.dropout(embedding))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from backbone features (as cached for linear probes)."""
        return self.classify(self.bottleneck(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))

    def group_parameters(self, group: int) -> Iterator[nn.Parameter]:
        """Parameters of backbone layer group ``group``."""
        params = dict(self.backbone.named_parameters())
        return (params[name] for name in self.layer_groups[group])

    def set_frozen_groups(self, groups: Iterable[int], *, requires_grad: bool | None = None) -> None:
        """Mark ``groups`` frozen (their norm layers stay in eval mode).

        With ``requires_grad=False`` their parameters also stop receiving gradients; strategies
        that thaw later keep gradients on and drop them instead (DDP registers parameters once).
        """
        self.frozen_groups = frozenset(groups)
        if requires_grad is not None:
            for group in range(self.num_groups):
                for param in self.group_parameters(group):
                    param.requires_grad_(requires_grad or group not in self.frozen_groups)
        self.train(self.training)

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        if mode:
            for group, layer in self._norm_layers:
                if group in self.frozen_groups:
                    layer.eval()
        return self

    def _norm_layers_by_group(self) -> list[tuple[int, nn.Module]]:
        """(group, layer) for every normalisation layer with running statistics in the backbone."""
        group_of = {name: i for i, names in enumerate(self.layer_groups) for name in names}
        found: list[tuple[int, nn.Module]] = []
        for name, layer in self.backbone.named_modules():
            if isinstance(layer, _NormBase) and layer.track_running_stats:
                owned = [f"{name}.{p}" for p, _ in layer.named_parameters()] or [_sibling(name, group_of)]
                groups = {group_of[p] for p in owned if p in group_of}
                found += [(group, layer) for group in groups]
        return found


def _sibling(name: str, group_of: dict[str, int]) -> str:
    """A parameter name next to a parameter-less norm layer, to find its group."""
    prefix = re.sub(r"\.[^.]+$", "", name)
    return next((p for p in group_of if p.startswith(prefix + ".")), name)
