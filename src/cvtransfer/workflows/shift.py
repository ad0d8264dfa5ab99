"""``cvtransfer shift``: how far apart two domains are in a backbone's features, without training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from cvtransfer.data.domains import DomainSplits, domain_samples
from cvtransfer.data.transforms import Preprocessing
from cvtransfer.engine.domain_shift import measure
from cvtransfer.models.factory import build_model

if TYPE_CHECKING:
    from cvtransfer.config import Config

FEATURE_PREPROCESSING = Preprocessing(input_size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # unused by rows


def measure_shift(config: Config, source: str | Path, target: str | Path) -> dict[str, Any]:
    """The shift between two domains in the features of ``config.backbone`` / ``config.weights``."""
    source_samples = domain_samples(source, config.max_image_pixels)
    target_samples = domain_samples(target, config.max_image_pixels)
    splits = DomainSplits(classes=["?", "?"], train=source_samples, val=[], target_train=target_samples)
    if splits.features:
        network: nn.Module = nn.Identity()
        preprocessing = FEATURE_PREPROCESSING
        described = f"the features of {source} and {target}"
    else:
        built = build_model(config.backbone, config.weights, 2, config.image_size,
                            allow_partial_weights=config.allow_partial_weights)
        network, preprocessing = built.model.backbone, built.preprocessing
        described = f"{config.backbone} features ({built.weights_id})"
    result = measure(network, splits, preprocessing, config)
    return {"source": str(source), "target": str(target), "features": described, **result}
