"""A small MLP that stands in for the backbone when the inputs are precomputed features.

Feature files (``.mat``, ``.npy``, ``.npz``) hold one vector per image from a network run
elsewhere (e.g. Office-Caltech's GoogleNet features). Adaptation needs trainable features, so a
Linear-ReLU-Dropout layer maps them to ``hidden`` dimensions; bottleneck and head follow as usual.
"""

from __future__ import annotations

from torch import nn

from cvtransfer.data.transforms import Preprocessing
from cvtransfer.models.backbones import Backbone

FEATURE_BACKBONE = "mlp"
FEATURE_DROPOUT = 0.5


def feature_backbone(in_features: int, hidden: int = 512) -> Backbone:
    """The MLP as a :class:`Backbone` (one layer group; its preprocessing is unused)."""
    module = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(FEATURE_DROPOUT))
    return Backbone(
        module=module,
        name=FEATURE_BACKBONE,
        source="features",
        num_features=hidden,
        preprocessing=Preprocessing(input_size=in_features, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        classifier_prefix="head",
        layer_groups=[[name for name, _ in module.named_parameters()]],
    )
