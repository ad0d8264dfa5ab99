"""DANN: domain-adversarial training through a gradient reversal layer.

Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand & Lempitsky,
"Domain-Adversarial Training of Neural Networks", JMLR 2016. A discriminator D tells source
features (label 1) from target features (label 0):

    L_D = 1/2 * ( E_s[-log D(f_s)] + E_t[-log(1 - D(f_t))] )

and the features are trained to maximise it through the gradient reversal layer, whose
coefficient ramps as lambda_p = 2 / (1 + exp(-10 p)) - 1 over the training progress p. The
discriminator is TLlib's (and the paper's): Linear-BN-ReLU, Linear-BN-ReLU, Linear to one logit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from cvtransfer.losses.base import LOSSES, DomainLoss
from cvtransfer.losses.grl import WarmStartGradientReverseLayer

if TYPE_CHECKING:
    from cvtransfer.config import Config
    from cvtransfer.models.transfer_model import TransferModel


class DomainDiscriminator(nn.Sequential):
    """MLP from features to one logit (source = 1, target = 0)."""

    def __init__(self, in_features: int, hidden: int = 1024) -> None:
        super().__init__(
            nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, 1),
        )


def domain_loss_and_accuracy(logits: torch.Tensor, num_source: int, weights: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary cross-entropy of discriminator ``logits`` (source rows first) and its accuracy.

    Without ``weights`` both domains count half, whatever their batch sizes.
    """
    logits = logits.view(-1)
    labels = torch.zeros_like(logits)
    labels[:num_source] = 1.0
    if weights is None:
        weights = torch.cat([logits.new_full((num_source,), 0.5 / num_source),
                             logits.new_full((len(logits) - num_source,), 0.5 / (len(logits) - num_source))])
    else:
        weights = weights / weights.sum()
    loss = (F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weights).sum()
    accuracy = ((logits.detach() > 0).float() == labels).float().mean()
    return loss, accuracy


@LOSSES.register("dann")
class DomainAdversarialLoss(DomainLoss):
    """DANN's adversarial loss: discriminator on gradient-reversed features (module docstring)."""

    name = "dann"
    metric_names = ("domain_accuracy",)

    def __init__(self, features_dim: int, hidden: int = 1024) -> None:
        super().__init__()
        self.discriminator = DomainDiscriminator(features_dim, hidden)
        self.grl = WarmStartGradientReverseLayer(alpha=10.0, lo=0.0, hi=1.0)

    @classmethod
    def build(cls, model: TransferModel, config: Config) -> DomainAdversarialLoss:
        return cls(model.features_dim, config.discriminator_dim)

    def compare(self, source_features: torch.Tensor, target_features: torch.Tensor, source_logits: torch.Tensor,
                target_logits: torch.Tensor, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        joint = self.grl(torch.cat([source_features, target_features]), progress)
        loss, accuracy = domain_loss_and_accuracy(self.discriminator(joint), len(source_features))
        return loss, {"domain_accuracy": accuracy}
