"""Deep CORAL: align the second-order statistics (covariances) of source and target features.

Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation", ECCV 2016
Workshops:

    L_CORAL = ||C_S - C_T||_F^2 / (4 d^2)

where C_S and C_T are the (unbiased) covariance matrices of the d-dimensional source and target
features of a batch.
"""

from __future__ import annotations

import torch

from cvtransfer.losses.base import LOSSES, DomainLoss


def covariance(features: torch.Tensor) -> torch.Tensor:
    """Unbiased covariance matrix (d, d) of ``features`` (n, d)."""
    centred = features - features.mean(0, keepdim=True)
    return centred.T @ centred / max(1, len(features) - 1)


def coral(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||C_S - C_T||_F^2 / (4 d^2)."""
    d = source.shape[1]
    return (covariance(source) - covariance(target)).pow(2).sum() / (4 * d * d)


@LOSSES.register("coral")
class CorrelationAlignmentLoss(DomainLoss):
    """Deep CORAL loss between source and target features."""

    name = "coral"

    def compare(self, source_features: torch.Tensor, target_features: torch.Tensor, source_logits: torch.Tensor,
                target_logits: torch.Tensor, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return coral(source_features, target_features), {}
