"""The domain shift an adaptation run records in shift.json: before and after training.

MMD, proxy A-distance and Wasserstein distance (``scores/shift.py``) between fixed samples of
source and target images, in the features of the network that adaptation trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cvtransfer.data.domains import DomainSplits, feature_width
from cvtransfer.data.features import compute_features
from cvtransfer.data.transforms import Preprocessing
from cvtransfer.engine.devices import pick_device
from cvtransfer.engine.streams import fixed_sample
from cvtransfer.models.factory import BuiltModel
from cvtransfer.models.transfer_model import TransferModel
from cvtransfer.scores.shift import domain_shift

if TYPE_CHECKING:
    from cvtransfer.config import Config

SHIFT_FILE = "shift.json"


def shift_features(network: nn.Module, splits: DomainSplits, preprocessing: Preprocessing, config: Config
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``network``'s features of a fixed sample of source training and target images."""
    device = pick_device(config.accelerator)
    kwargs: dict[str, Any] = dict(batch_size=config.batch_size, device=device, max_pixels=config.max_image_pixels)
    source = compute_features(network, fixed_sample(splits.train, config.shift_samples, config.seed), preprocessing,
                              **kwargs)[0]
    target = compute_features(network, fixed_sample(splits.target_train, config.shift_samples, config.seed),
                              preprocessing, **kwargs)[0]
    network.cpu()
    return source, target


def measure(network: nn.Module, splits: DomainSplits, preprocessing: Preprocessing, config: Config
            ) -> dict[str, Any]:
    """MMD, proxy A-distance and Wasserstein between the domains in ``network``'s feature space."""
    return domain_shift(*shift_features(network, splits, preprocessing, config), config.shift_samples, config.seed)


def shift_spaces(config: Config, splits: DomainSplits) -> dict[str, str]:
    """What feature space each measure of shift.json is taken in (before and after share one)."""
    bottleneck = f"the {config.bottleneck_dim}-d bottleneck after adaptation"
    if splits.features:
        network = f"the MLP's {config.mlp_dim}-d features"
        return {"network": network, "input": f"the feature files' own {feature_width(splits.train)}-d features",
                "before": f"{network} at initialisation", "after": f"{network} after adaptation",
                "after_bottleneck": bottleneck}
    network = f"{config.backbone} features"
    return {"network": network, "before": f"{network}, starting weights", "after": f"{network} after adaptation",
            "after_bottleneck": bottleneck}


def measure_before(built: BuiltModel, splits: DomainSplits, config: Config) -> dict[str, Any]:
    """The shift before training, in the space of the network that adaptation trains (``after`` is in the same).

    For feature files that network is the MLP, at its initial weights; the files' own features,
    a space of another width, are measured as ``input``.
    """
    measures = {"before": measure(built.model.backbone, splits, built.preprocessing, config)}
    if splits.features:
        measures["input"] = measure(nn.Identity(), splits, built.preprocessing, config)
    return measures


def measure_after(model: TransferModel, splits: DomainSplits, preprocessing: Preprocessing, config: Config
                  ) -> dict[str, Any]:
    """The shift after training, in the backbone's features and in the bottleneck's."""
    return {"after": measure(model.backbone, splits, preprocessing, config),
            "after_bottleneck": measure(nn.Sequential(model.backbone, model.bottleneck), splits, preprocessing,
                                        config)}
