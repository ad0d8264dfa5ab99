"""Feature extraction: the backbone is frozen, its features computed once and cached, the head trained.

With ``--head linear`` the head trains in the engine on the cached features, so an epoch costs only
the head; ``--head logistic`` or ``svm`` fit a scikit-learn classifier on them instead, whose
coefficients become the model's linear head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from torch import nn

from cvtransfer.errors import ConfigError
from cvtransfer.models.transfer_model import TransferModel
from cvtransfer.options import STRATEGY, opt
from cvtransfer.strategies.base import STRATEGIES, Strategy


@dataclass
class LinearOptions:
    """Which head the probe fits."""

    head: Literal["linear", "logistic", "svm"] = opt(
        "linear", "linear strategy: torch linear head, or a scikit-learn logistic/svm on cached features.", STRATEGY)


@STRATEGIES.register("linear")
class LinearProbe(Strategy):
    """Frozen backbone, cached features, trainable head."""

    name = "linear"
    uses_feature_cache = True
    options = LinearOptions

    def setup(self) -> None:
        if not isinstance(self.model.bottleneck, nn.Identity):
            raise ConfigError("--strategy linear trains the head on cached backbone features and takes no "
                              "bottleneck: use --bottleneck-dim 0, or --strategy partial to train a bottleneck")
        self.model.set_frozen_groups(range(self.model.num_groups), requires_grad=False)

    def param_groups(self) -> list[dict[str, Any]]:
        params = list(self.model.head.parameters())
        return [{"name": "head", "params": params, "lr": self.config.lr * self.config.head_lr_mult,
                 "weight_decay": self.config.weight_decay}]


def fit_sklearn_head(
    model: TransferModel, features: torch.Tensor, labels: torch.Tensor, kind: str, seed: int = 0
) -> None:
    """Fit a scikit-learn ``logistic`` or ``svm`` classifier and write it into ``model.head``.

    Features are standardised inside the pipeline; the scaler is folded into the linear weights, so
    the head applies to raw features. Classes missing from ``labels`` get a large negative bias.
    """
    x = features.double().numpy()
    y = labels.numpy()
    classifier = (
        LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
        if kind == "logistic"
        else LinearSVC(C=1.0, max_iter=20000, random_state=seed)
    )
    pipeline = make_pipeline(StandardScaler(), classifier).fit(x, y)
    scaler = pipeline[0]
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    coef, intercept = classifier.coef_, classifier.intercept_
    if coef.shape[0] == 1:  # binary: sklearn keeps one row for the positive class
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = np.full((model.num_classes, x.shape[1]), 0.0)
    bias = np.full(model.num_classes, -1e4)
    weight[classifier.classes_] = coef / scale
    bias[classifier.classes_] = intercept - (coef / scale) @ scaler.mean_
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight))
        model.head.bias.copy_(torch.from_numpy(bias))
