"""CDAN and CDAN+E: adversarial alignment conditioned on the classifier's predictions.

Long, Cao, Wang & Jordan, "Conditional Adversarial Domain Adaptation", NeurIPS 2018. The
discriminator sees the multilinear map of features f and softmax predictions g,

    T(f, g) = f (x) g   (outer product, flattened; d * C values)

or, when d * C is large, the randomized map T(f, g) = (R_f f) * (R_g g) / sqrt(k) with fixed
Gaussian R_f, R_g (k = 1024). Gradients reach f through a gradient reversal layer (g is
detached). CDAN+E weights each example by its certainty, w = 1 + exp(-H(g)), normalised to
mean 1 over the batch, so confident predictions drive the alignment:

    L = E_s[ -w log D(T(f_s, g_s)) ] + E_t[ -w log(1 - D(T(f_t, g_t))) ]
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from cvtransfer.losses.base import LOSSES, DomainLoss
from cvtransfer.losses.dann import DomainDiscriminator, domain_loss_and_accuracy
from cvtransfer.losses.grl import WarmStartGradientReverseLayer

if TYPE_CHECKING:
    from cvtransfer.config import Config
    from cvtransfer.models.transfer_model import TransferModel

MAX_OUTER_PRODUCT = 4096  # above this width the randomized multilinear map is used, as in the paper
RANDOMIZED_DIM = 1024


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of ``probs``."""
    return -(probs * probs.clamp(min=1e-12).log()).sum(dim=1)


class MultilinearMap(nn.Module):
    """f (x) g, flattened: (n, d) and (n, C) to (n, d * C)."""

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (g.unsqueeze(2) * f.unsqueeze(1)).flatten(1)


class RandomizedMultilinearMap(nn.Module):
    """(R_f f) * (R_g g) / sqrt(k): an unbiased estimate of the outer product's inner products."""

    rf: torch.Tensor
    rg: torch.Tensor

    def __init__(self, features_dim: int, num_classes: int, output_dim: int = RANDOMIZED_DIM) -> None:
        super().__init__()
        self.register_buffer("rf", torch.randn(features_dim, output_dim))
        self.register_buffer("rg", torch.randn(num_classes, output_dim))
        self.output_dim = output_dim

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (f @ self.rf) * (g @ self.rg) / math.sqrt(self.output_dim)


class ConditionalDomainAdversarialLoss(DomainLoss):
    """CDAN's loss (module docstring); ``entropy_conditioning`` makes it CDAN+E."""

    name = "cdan"
    metric_names = ("domain_accuracy",)

    def __init__(self, features_dim: int, num_classes: int, hidden: int = 1024,
                 entropy_conditioning: bool = False) -> None:
        super().__init__()
        randomized = features_dim * num_classes > MAX_OUTER_PRODUCT
        self.map = RandomizedMultilinearMap(features_dim, num_classes) if randomized else MultilinearMap()
        width = RANDOMIZED_DIM if randomized else features_dim * num_classes
        self.discriminator = DomainDiscriminator(width, hidden)
        self.grl = WarmStartGradientReverseLayer(alpha=10.0, lo=0.0, hi=1.0)
        self.entropy_conditioning = entropy_conditioning

    @classmethod
    def build(cls, model: TransferModel, config: Config) -> ConditionalDomainAdversarialLoss:
        return cls(model.features_dim, model.num_classes, config.discriminator_dim, entropy_conditioning=cls.name == "cdan+e")

    def compare(self, source_features: torch.Tensor, target_features: torch.Tensor, source_logits: torch.Tensor,
                target_logits: torch.Tensor, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        f = torch.cat([source_features, target_features])
        g = torch.cat([source_logits, target_logits]).softmax(dim=1).detach()
        h = self.grl(self.map(f, g), progress)
        weights = 1.0 + torch.exp(-entropy(g)) if self.entropy_conditioning else None
        loss, accuracy = domain_loss_and_accuracy(self.discriminator(h), len(source_features), weights)
        return loss, {"domain_accuracy": accuracy}


@LOSSES.register("cdan")
class CDAN(ConditionalDomainAdversarialLoss):
    """CDAN without entropy conditioning."""

    name = "cdan"


@LOSSES.register("cdan+e")
class CDANE(ConditionalDomainAdversarialLoss):
    """CDAN with entropy conditioning."""

    name = "cdan+e"
